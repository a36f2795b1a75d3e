"""Text to image (chapter 17): the attribute rules measure what they say, captions never name a
held-out combination, the tokeniser round-trips, CLIP's loss equals its definition, the text
encoder ignores padding, cross-attention equals attention written out and starts as a no-op,
guidance on captions mixes the two branches it should, spacetime patches count and round-trip,
and the shipped encoder pair and U-Net match their pins and do what the chapter says."""
import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_course.data import captions
from diffusion_course.data.captions import AttributeScale, Tokeniser, caption, captions_for, hold_out, slant, thickness
from diffusion_course.data.video import moving_digit
from diffusion_course.diffusion.sampling import predict
from diffusion_course.models.patches import patch_count, spacetime_patches, unpatch
from diffusion_course.models.text import ContrastivePair, ImageEncoder, TextConditionedUNet, TextEncoder, contrastive_loss
from diffusion_course.models.unet import CrossAttention, UNet
from diffusion_course.recipes import references
from diffusion_course.recipes import text_to_image as t2i
from diffusion_course.training import references as reference
from diffusion_course.training.loop import TrainConfig, draw_batch

TOK = Tokeniser()


def _canvas(pixels) -> torch.Tensor:
    x = -torch.ones(1, 1, 28, 28)
    for r, c in pixels:
        x[0, 0, r, c] = 1.0
    return x


# ---------------------------------------------------------------------------------------
# Attributes and captions
# ---------------------------------------------------------------------------------------
def test_thickness_is_the_ink_that_survives_an_erosion():
    line = _canvas([(r, 14) for r in range(4, 24)])                       # 1 px wide
    bar = -torch.ones(1, 1, 28, 28)
    bar[..., 4:24, 10:16] = 1.0                                           # 6 px wide: 4 x 18 survive
    assert thickness(line).item() == 0.0
    assert thickness(bar).item() == pytest.approx(4 * 18 / (6 * 20))
    assert thickness(torch.cat([line, bar])).shape == (2,)


def test_slant_is_pixels_right_per_pixel_up():
    upright = _canvas([(r, 14) for r in range(4, 24)])
    right = _canvas([(r, 14 + (24 - r) // 2) for r in range(4, 24)])     # one right per two up
    left = torch.flip(right, dims=[-1])
    assert slant(upright).item() == pytest.approx(0.0, abs=1e-6)
    assert slant(right).item() == pytest.approx(0.5, abs=0.03)
    assert slant(left).item() == pytest.approx(-0.5, abs=0.03)


def test_levels_and_matches_follow_the_class_terciles_and_median():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 1, 28, 28, generator=g) * 2 - 1
    y = torch.arange(300) % 10
    values = captions.measure(x)
    scale = AttributeScale(values, y)
    levels = scale.levels(values, y)
    for a in captions.ATTRIBUTES:
        lo, hi = scale.cuts[a][y, 0], scale.cuts[a][y, 2]
        assert torch.equal(levels[a] == 0, values[a] <= lo) and torch.equal(levels[a] == 2, values[a] > hi)
        # about a third in each level, class by class
        assert abs((levels[a] == 0).float().mean().item() - 1 / 3) < 0.05
    asked = {a: torch.full((300,), 2) for a in captions.ATTRIBUTES}
    matched = scale.matches(values, y, asked)
    assert torch.equal(matched["slant"], values["slant"] > scale.cuts["slant"][y, 1])
    asked["thickness"][:] = 1                                             # not asked: never counted
    assert not scale.matches(values, y, asked)["thickness"].any()


def test_captions_read_as_sentences_and_say_only_the_levels():
    assert caption(7, 2, 2) == "a thick seven leaning right"
    assert caption(7, 2, 2, 1, 1, True) == "7, bold, slanted right"
    assert caption(8, 0, 1, 2) == "a handwritten eight that is thin"
    assert caption(3, 1, 1, 3) == "the digit three"
    assert caption(8, 1, 1) == "an eight"
    with pytest.raises(ValueError, match="digit must be 0-9"):
        caption(10, 1, 1)


def test_training_captions_never_name_a_held_out_combination():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat_interleave(40)
    levels = {"thickness": torch.tensor([0, 2]).repeat(200), "slant": torch.tensor([0, 0, 2, 2]).repeat(100)}
    held = hold_out(labels, levels)
    assert held.any() and not held.all()
    thick_words = {w for k in ("thin", "thick") for w in captions.SYNONYMS[k]}
    lean_words = {w for k in ("left", "right") for w in captions.SYNONYMS[k]}

    def names_both(text):
        return any(w in text for w in thick_words) and any(w in text for w in lean_words)

    train = captions_for(labels, levels, g, training=True)
    assert not any(names_both(c) for c, h in zip(train, held) if h)
    assert all(names_both(c) for c, h in zip(train, held) if not h)
    test = captions_for(labels, levels, g, training=False)
    assert all(names_both(c) for c in test)


def test_tokeniser_round_trips_and_refuses_long_captions():
    ids = TOK.encode(["A thick 7, leaning right", "a seven"])
    assert ids.shape == (2, captions.CONTEXT_LENGTH) and ids.dtype == torch.long
    assert TOK.decode(ids) == ["a thick 7, leaning right", "a seven"]
    assert TOK.encode("a purple seven")[0, 1] == TOK.vocab[captions.UNKNOWN]
    assert (TOK.encode("")[0] == 0).all()                                  # the empty caption: all padding
    with pytest.raises(ValueError, match="at most 12"):
        TOK.encode("a " * 13)
    for template in range(captions.TEMPLATES):                           # every template fits
        assert len(TOK.split(caption(7, 2, 2, template))) <= captions.CONTEXT_LENGTH


# ---------------------------------------------------------------------------------------
# The encoder pair
# ---------------------------------------------------------------------------------------
def test_contrastive_loss_is_the_mean_of_both_cross_entropies():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 6, generator=g)
    direct = 0.0
    for i in range(6):       # -log softmax of the diagonal, along the row and down the column
        direct -= math.log(math.exp(logits[i, i]) / sum(math.exp(logits[i, j]) for j in range(6)))
        direct -= math.log(math.exp(logits[i, i]) / sum(math.exp(logits[j, i]) for j in range(6)))
    assert contrastive_loss(logits).item() == pytest.approx(direct / 12, rel=1e-5)
    assert contrastive_loss(100 * torch.eye(6)).item() < 1e-6            # a perfect match costs nothing


def test_pair_logits_are_scaled_cosines_and_padding_is_ignored():
    torch.manual_seed(0)
    pair = ContrastivePair(TextEncoder(len(TOK), captions.CONTEXT_LENGTH, width=16, embed_dim=8),
                           ImageEncoder(width=8, embed_dim=8)).eval()
    x, ids = torch.randn(3, 1, 28, 28), TOK.encode(["a seven", "a thick two leaning left", ""])
    logits = pair(x, ids)
    cos = F.cosine_similarity(pair.image(x)[:, None], pair.text(ids)[2][None], dim=-1)
    assert torch.allclose(logits, math.exp(pair.log_scale.item()) * cos, atol=1e-5)
    with torch.no_grad():
        pair.log_scale.fill_(10.0)
    assert pair.scale().item() == ContrastivePair.MAX_SCALE
    before = pair.text(ids)[2]
    with torch.no_grad():
        pair.text.words.weight[0].normal_()                               # the padding's embedding
    assert torch.allclose(pair.text(ids)[2], before, atol=1e-6)


def test_retrieval_and_zero_shot_score_what_they_say():
    class Oracle(torch.nn.Module):           # logits: image i matches caption i exactly
        def forward(self, images, ids):
            return images.flatten(1)[:, :len(ids)] @ torch.eye(len(ids))

    x = torch.eye(64).repeat(2, 1)[:, None, None, :]                     # digit i of each batch: e_i
    report = t2i.retrieval(Oracle(), x, torch.zeros(128, 12, dtype=torch.long), batch=64)
    assert report["caption_to_image_top1"] == 1.0 and report["image_to_caption_top5"] == 1.0
    assert report["chance_top1"] == 1 / 64 and report["n"] == 128


# ---------------------------------------------------------------------------------------
# Cross-attention and the text-conditioned U-Net
# ---------------------------------------------------------------------------------------
def test_cross_attention_equals_attention_written_out():
    torch.manual_seed(0)
    block = CrossAttention(8, 6, heads=2)
    torch.nn.init.normal_(block.out.weight)
    x, ctx = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 6)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    weights, _ = block.weights(x, ctx, mask)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 2, 9)) and (weights[0, ..., 2:] == 0).all()
    q = block.q(block.norm(x)).flatten(2)                                 # [B, C, N]
    k, v = block.kv(ctx).split(8, dim=-1)                                 # [B, M, C] each
    out = torch.zeros(2, 8, 9)
    for b in range(2):
        for h in range(2):
            s = slice(4 * h, 4 * h + 4)
            logits = q[b, s].T @ k[b, :, s].T / 2.0                        # [N, M], / sqrt(d = 4)
            logits[:, ~mask[b]] = float("-inf")
            out[b, s] = (torch.softmax(logits, -1) @ v[b, :, s]).T
    expected = x + block.out(out.reshape(2, 8, 3, 3))
    assert torch.allclose(block(x, ctx, mask), expected, atol=1e-5)


@pytest.fixture(scope="module")
def small_text_unet():
    torch.manual_seed(0)
    start = UNet(base=8, mults=(1, 2), attention_levels=(1,), patch=2)
    for p in start.parameters():
        p.data.normal_(0, 0.05)
    unet = UNet(**{**start.config, "context_dim": 16})
    unet.load_state_dict(start.state_dict(), strict=False)
    text = TextEncoder(len(TOK), captions.CONTEXT_LENGTH, width=16, embed_dim=8)
    return start.eval(), TextConditionedUNet(text, unet).eval()


def test_text_unet_starts_as_its_unconditional_start_and_guidance_mixes_branches(small_text_unet):
    start, net = small_text_unet
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([10, 500, 900])
    ids = TOK.encode(["a seven", "a thick two", "4, slanted left"])
    with torch.no_grad():
        assert torch.equal(net(x, t, ids), start(x, t))                   # zero output projections
        for m in net.modules():
            if isinstance(m, CrossAttention):
                torch.nn.init.normal_(m.out.weight, std=0.1)
        cond, uncond = net(x, t, ids), net(x, t, TOK.encode(["", "", ""]))
        assert not torch.allclose(cond, uncond, atol=1e-4)
        assert torch.allclose(net(x, t), uncond)                          # no caption = the empty one
        a, s = torch.tensor(0.6), torch.tensor(0.8)
        guided = predict(net, x, 500, "eps", a, s, ids, guidance=3.0, clip_x0=False)[1]
        mixed = predict(net, x, 500, "eps", a, s, ids, clip_x0=False)[1] * 3 - 2 * \
            predict(net, x, 500, "eps", a, s, TOK.encode(["", "", ""]), clip_x0=False)[1]
    assert torch.allclose(guided, mixed, atol=1e-4)
    with pytest.raises(ValueError, match="captions must be 3 rows"):
        predict(net, x, 500, "eps", a, s, ids[:2], guidance=2.0)
    with pytest.raises(ValueError, match="needs context"):
        net.unet(x, t)


def test_caption_dropout_empties_whole_captions(small_text_unet):
    _, net = small_text_unet
    ids = TOK.encode(["a thick seven leaning right"] * 400)
    cfg = TrainConfig(label_dropout=0.25)
    _, y = draw_batch(torch.zeros(400, 1, 28, 28), ids, cfg, torch.Generator().manual_seed(0),
                      net.null_condition, 400)
    dropped = (y == 0).all(1)
    assert 0.18 < dropped.float().mean() < 0.32
    assert torch.equal(y[~dropped], ids[~dropped])


# ---------------------------------------------------------------------------------------
# Spacetime patches
# ---------------------------------------------------------------------------------------
def test_spacetime_patches_count_and_round_trip():
    clip = moving_digit(torch.rand(1, 28, 28) * 2 - 1, frames=8, size=32, velocity=(0, 0))
    assert clip.shape == (8, 1, 32, 32) and torch.equal(clip[3, :, :28, :28], clip[0, :, :28, :28])
    for patch, expected in (((1, 4, 4), (512, 16)), ((2, 4, 4), (256, 32)), ((4, 8, 8), (32, 256))):
        tokens = spacetime_patches(clip, patch)
        assert patch_count(tuple(clip.shape), patch) == expected == tuple(tokens.shape)
        assert torch.equal(unpatch(tokens, tuple(clip.shape), patch), clip)
    first = spacetime_patches(clip, (2, 4, 4))[0].reshape(2, 4, 4, 1).permute(0, 3, 1, 2)
    assert torch.equal(first, clip[:2, :, :4, :4])                       # token 0: frames 0-1, top-left
    with pytest.raises(ValueError, match="does not cut"):
        patch_count((8, 1, 32, 32), (3, 4, 4))
    with pytest.raises(ValueError, match="leaves a 32x32 canvas"):
        moving_digit(torch.zeros(1, 28, 28), frames=8, size=32, velocity=(0, 1))


# ---------------------------------------------------------------------------------------
# The shipped models
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [t2i.CLIP, t2i.TEXT_UNET])
def test_shipped_models_match_their_pins(name):
    path = reference.reference_path(name)
    assert path.exists(), f"{path} is missing: train it with `python -m diffusion_course.recipes.references {name}`"
    assert path.stat().st_size <= 6_000_000 and reference.sha256sum(path) == reference.SHA256[name]
    assert name in references.trainers()


def test_shipped_encoder_pair_retrieves_and_classifies(real_data_root, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_ROOT", str(real_data_root))
    pair, info = t2i.encoder_pair("reference")
    test = t2i.caption_data("test")
    report = t2i.retrieval(pair, test["images"][:1024], test["ids"][0, :1024])
    assert report["caption_to_image_top1"] >= 5 * report["chance_top1"]
    zero_shot = t2i.zero_shot(pair, test["images"][:2000])
    assert (zero_shot == test["labels"][:2000]).double().mean() >= 0.9


def test_shipped_text_unet_reads_the_shipped_text_encoder_and_draws_the_digit_asked(
        real_data_root, ci_judge_cache, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_ROOT", str(real_data_root))
    pair, _ = t2i.encoder_pair("reference")
    net, info = t2i.text_unet("reference")
    assert all(torch.equal(a, b.to(a)) for a, b in zip(pair.text.state_dict().values(),
                                                        net.text.state_dict().values()))
    assert not any(p.requires_grad for p in net.parameters())
    prompts = [f"a handwritten {w}" for w in captions.NUMBER_WORDS] * 3
    samples = t2i.text_to_image(prompts, net, info["train_config"], guidance=3.0, steps=10)
    accuracy = (ci_judge_cache[1].labels(samples) == torch.arange(10).repeat(3)).double().mean()
    assert accuracy >= 0.8                  # an untrained cross-attention would hit ~10 %


def test_a_student_text_unet_trains_from_the_shipped_pieces(real_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_ROOT", str(real_data_root))
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    pair, _ = t2i.encoder_pair("reference")
    net, info = t2i.text_unet("student", "ci", progress=False)
    assert info["source"] == "student" and info["steps"] == t2i.TEXT_RECIPES["ci"]["steps"]
    assert info["train_config"].label_dropout == t2i.CAPTION_DROPOUT
    assert all(torch.equal(a, b) for a, b in zip(pair.text.state_dict().values(), net.text.state_dict().values()))
    own, own_info = t2i.encoder_pair("student", "ci", progress=False)
    assert own_info["source"] == "student" and own_info["losses"][0] == pytest.approx(math.log(128), abs=0.5)
