"""Safety metric: perturbations hit their SNR, only correctly classified clips are attacked, degenerate cases are
reported not hidden, and the waveform path the attack differentiates is the one the features came from."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from trustser.backbones.base import BackboneOutput, lengths_to_mask
from trustser.backbones.loading import load_backbone
from trustser.errors import UnknownNameError
from trustser.features import compute_hidden, read_entry, write_entry
from trustser.head import EmotionHead
from trustser.metrics.safety import (
    SWEEP_SNRS_DB,
    AttackSettings,
    UnitIntervalView,
    WaveformClassifier,
    attack_success_rate,
    run_attack,
    snr_db,
    snr_epsilon,
    snr_sweep,
    sweep_figure,
)

SR = 16000


# ------------------------------------------------------------------------------------------- a model we can read
class FramesBackbone(nn.Module):
    """hidden = the waveform cut into 160-sample frames, [B, 1, frames, 160]."""

    def forward(self, waves, lengths):
        frames = waves.shape[1] // 160
        hidden = waves[:, : frames * 160].reshape(waves.shape[0], 1, frames, 160)
        return BackboneOutput(hidden, lengths_to_mask(lengths // 160, frames))


class MeanSignHead(nn.Module):
    """Class 0 iff the clip's mean sample is positive (logits ±gain·mean); optional dropout and BatchNorm."""

    def __init__(self, with_noise_layers: bool = False, gain: float = 10.0):
        super().__init__()
        self.fc = nn.Linear(1, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[gain], [-gain]]))
        self.dropout = nn.Dropout(0.5) if with_noise_layers else nn.Identity()
        self.norm = nn.BatchNorm1d(1) if with_noise_layers else nn.Identity()

    def forward(self, hidden, mask):
        m = mask.to(hidden.dtype)
        mean = (hidden[:, 0].mean(-1) * m).sum(-1) / m.sum(-1)
        return self.fc(self.dropout(mean[:, None]))


def stub_classifier(**kwargs) -> WaveformClassifier:
    return WaveformClassifier(FramesBackbone(), MeanSignHead(**kwargs), feature_dtype=None)


def noise(seed: int, n: int = SR, scale: float = 0.1) -> torch.Tensor:
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)) * scale
    return x - x.mean()


CLIPS = {  # all labelled 0 ("mean > 0")
    "robust": noise(1) + 0.5,  # correct; ε (≈ 5.6e-4 at 45 dB) cannot move the mean below 0
    "fragile": noise(2) + 1e-4,  # correct; one FGSM step moves the mean by -ε and flips it
    "wrong": noise(3) - 0.5,  # misclassified: never attacked
    "silent": torch.zeros(SR),  # SNR undefined: skipped
}
IDS = list(CLIPS)
WAVES = [CLIPS[c] for c in IDS]
LABELS = [0] * len(IDS)


# ----------------------------------------------------------------------------------------------------- ε and SNR
def test_epsilon_puts_a_full_sign_vector_at_the_target_snr():
    x = noise(5)
    eps = snr_epsilon(x, 45.0)
    assert eps == pytest.approx(float(x.double().norm()) / math.sqrt(x.numel()) * 10 ** (-45 / 20), rel=1e-12)
    sign = torch.sign(torch.randn(x.numel(), generator=torch.Generator().manual_seed(0)))
    assert snr_db(x, x.double() + eps * sign) == pytest.approx(45.0, abs=1e-6)
    sign[:4000] = 0  # zeros in sign(g): ε over the nonzero entries keeps the SNR
    assert snr_db(x, x.double() + snr_epsilon(x, 45.0, n_active=12000) * sign) == pytest.approx(45.0, abs=1e-6)


def test_snr_of_a_silent_clip_is_undefined_and_of_no_perturbation_infinite():
    assert math.isnan(snr_db(torch.zeros(10), torch.ones(10)))
    assert snr_db(torch.ones(10), torch.ones(10)) == math.inf


def test_the_unit_interval_view_leaves_headroom_so_the_clamp_never_binds():
    x = noise(6)
    x[100] = 0.99  # a peak at full scale
    eps = snr_epsilon(x, 30.0)
    view = UnitIntervalView(stub_classifier(), x, eps)
    assert float(view.u0.min()) - view.eps_unit > 0 and float(view.u0.max()) + view.eps_unit < 1
    assert torch.equal(view.to_wave(view.u0), x)  # the clean clip reaches the model bit-identical
    delta = view.to_wave(view.u0 + view.eps_unit).double() - x.double()
    assert torch.allclose(delta, torch.full_like(delta, eps), rtol=1e-5)


@pytest.mark.parametrize("attack", ["fgsm", "gaussian"])
def test_fgsm_and_gaussian_reach_the_target_snr(attack):
    reports = run_attack(stub_classifier(), WAVES[:2], [0, 0], attack, SWEEP_SNRS_DB, clip_ids=IDS[:2])
    for snr, report in reports.items():
        assert report.n_attacked == 2
        for r in report.records:
            assert r.achieved_snr_db == pytest.approx(snr, abs=0.1)
            assert r.eps == pytest.approx(snr_epsilon(CLIPS[r.clip_id], snr), rel=1e-9)


def test_pgd_stays_in_the_fgsm_budget_and_reports_its_snr():
    settings = AttackSettings(pgd_steps=5)
    reports = run_attack(stub_classifier(), WAVES[:2], [0, 0], "pgd", (35.0, 45.0), clip_ids=IDS[:2], settings=settings)
    for snr, report in reports.items():
        for r in report.records:
            assert r.achieved_snr_db >= snr - 0.1
            assert report.min_snr_db <= r.achieved_snr_db <= report.max_snr_db
            assert r.eps == pytest.approx(snr_epsilon(CLIPS[r.clip_id], snr))


# --------------------------------------------------------------------------------------------------------- ASR
@pytest.mark.parametrize("attack, expected_asr", [("fgsm", 0.5), ("pgd", 0.5), ("gaussian", 0.0)])
def test_asr_counts_only_correctly_classified_clips(attack, expected_asr):
    report = attack_success_rate(
        stub_classifier(), WAVES, LABELS, attack, 45.0, clip_ids=IDS, settings=AttackSettings(pgd_steps=3)
    )
    status = {r.clip_id: r.status for r in report.records}
    assert status == {"robust": "attacked", "fragile": "attacked", "wrong": "incorrect", "silent": "silent"}
    assert (report.n_attacked, report.n_incorrect, report.n_silent) == (2, 1, 1)
    assert report.asr == expected_asr
    assert report.n_flipped == int(expected_asr * 2)
    assert "silent" in report.reason and math.isnan(report.records[IDS.index("silent")].achieved_snr_db)


def test_fgsm_pushes_against_the_true_class():
    report = attack_success_rate(stub_classifier(), [CLIPS["fragile"]], [0], "fgsm", 45.0)
    r = report.records[0]
    assert (r.clean_pred, r.adv_pred, r.flipped) == (0, 1, True)


def test_given_clean_predictions_skip_misclassified_clips_and_expose_mismatches():
    # the caller says "robust" is wrong (skipped without compute) and "wrong" is right (the waveform path disagrees)
    report = attack_success_rate(
        stub_classifier(), WAVES, LABELS, "fgsm", 45.0, clip_ids=IDS, clean_predictions=[1, 0, 0, 0]
    )
    status = {r.clip_id: r.status for r in report.records}
    assert status == {"robust": "incorrect", "fragile": "attacked", "wrong": "clean_mismatch", "silent": "silent"}
    assert (report.n_attacked, report.n_flipped, report.n_clean_mismatch, report.asr) == (1, 1, 1, 1.0)


def test_no_correctly_classified_clip_gives_nan_with_a_reason():
    report = attack_success_rate(stub_classifier(), [CLIPS["wrong"], CLIPS["silent"]], [0, 0], "fgsm", 45.0)
    assert math.isnan(report.asr) and report.n_attacked == 0
    assert "no correctly classified clip" in report.reason
    assert math.isnan(report.to_dict()["achieved_snr_db_mean"])


def test_a_saturated_softmax_gives_fgsm_no_gradient_and_the_clip_counts_as_not_flipped():
    # logits ±5000: the float32 cross-entropy gradient is exactly 0, sign() is 0 everywhere
    report = attack_success_rate(stub_classifier(gain=1e4), [CLIPS["robust"]], [0], "fgsm", 45.0)
    r = report.records[0]
    assert (r.status, r.flipped, r.n_unperturbed, r.achieved_snr_db) == ("attacked", False, SR, math.inf)
    assert report.asr == 0.0 and math.isnan(report.mean_snr_db)


def test_clip_waves_reads_clips_lazily_as_the_feature_extractor_does(tmp_path):
    import soundfile as sf

    from trustser.metrics.safety import ClipWaves

    sf.write(tmp_path / "a.wav", CLIPS["fragile"].numpy(), SR, subtype="FLOAT")
    waves = ClipWaves([tmp_path / "a.wav"], max_seconds=0.5)
    assert len(waves) == 1 and waves[0].shape == (SR // 2,)
    torch.testing.assert_close(waves[0], CLIPS["fragile"][: SR // 2])


def test_unknown_attack_names_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown attack 'cw'.*fgsm"):
        attack_success_rate(stub_classifier(), WAVES, LABELS, "cw")


def test_train_mode_switches_on_dropout_only_and_is_undone_after_the_attack():
    classifier = stub_classifier(with_noise_layers=True)
    assert not any(m.training for m in classifier.modules())  # built in eval mode
    classifier.train()
    assert classifier.head.dropout.training and not classifier.head.norm.training
    classifier.eval()
    report = attack_success_rate(classifier, WAVES[:2], [0, 0], "fgsm", 45.0, settings=AttackSettings(train_mode=True))
    assert report.n_attacked == 2
    assert not any(m.training for m in classifier.modules())


def test_snr_sweep_gives_asr_per_attack_and_snr_and_a_figure():
    sweep = snr_sweep(
        stub_classifier(), WAVES, LABELS, snrs=(30.0, 45.0, 60.0), clip_ids=IDS, settings=AttackSettings(pgd_steps=2)
    )
    table = sweep.table()
    assert len(table) == 9 and set(table["attack"]) == {"fgsm", "pgd", "gaussian"}
    assert sweep.asr("fgsm", 45.0) == 0.5 and sweep.to_dict()["asr_gaussian_snr45"] == 0.0
    fig = sweep_figure(sweep, "stub")
    assert len(fig.axes[0].lines) == 3


# ------------------------------------------------------------------------------------------- real front ends
@pytest.fixture(scope="module")
def whisper_tiny():
    return load_backbone("whisper_tiny", random_init=True)[0]


def test_fgsm_on_whisper_hits_the_snr_despite_the_samples_its_stft_never_sees(whisper_tiny):
    # 16100 samples: Whisper keeps 100 STFT frames, the last reaching sample 16040, so 60 samples get no gradient
    torch.manual_seed(0)
    x = torch.randn(16100) * 0.1
    head = EmotionHead(whisper_tiny.spec.num_hidden_states, whisper_tiny.spec.hidden_size)
    classifier = WaveformClassifier(whisper_tiny, head)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    label = int(classifier(x[None]).argmax())
    exact = attack_success_rate(classifier, [x], [label], "fgsm", 45.0).records[0]
    assert exact.status == "attacked" and exact.n_unperturbed >= 60
    assert exact.achieved_snr_db == pytest.approx(45.0, abs=0.01)
    nominal = attack_success_rate(
        classifier, [x], [label], "fgsm", 45.0, settings=AttackSettings(match_nonzero_gradient=False)
    ).records[0]
    assert nominal.achieved_snr_db == pytest.approx(
        45 + 10 * math.log10(16100 / (16100 - exact.n_unperturbed)), abs=1e-3
    )
    after = classifier.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing was updated
    assert all(p.grad is None for p in classifier.parameters())


@pytest.mark.parametrize("name", ["whisper_tiny", "wav2vec2_base", "apc", "tera"])
def test_the_attacked_waveform_path_gives_the_cached_features_and_finite_gradients(name, tmp_path):
    backbone = load_backbone(name, random_init=True)[0]
    n = SR // 2  # short: APC's GRU backward on CPU costs seconds per second of audio
    x = torch.randn(n, generator=torch.Generator().manual_seed(3)) * 0.1
    cached = compute_hidden(backbone, x)  # what the feature cache computes (inference mode)
    write_entry(tmp_path / "entry.safetensors", cached)
    stored = read_entry(tmp_path / "entry.safetensors")
    wave = x.clone().requires_grad_(True)
    out = backbone(wave[None], torch.tensor([n]))
    frames = int(out.mask[0].sum())
    hidden = out.hidden[0, :, :frames]
    torch.testing.assert_close(hidden.detach(), cached, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(hidden.detach().half(), stored, atol=2e-3, rtol=2e-3)
    projection = torch.randn(hidden.shape, generator=torch.Generator().manual_seed(4))
    (hidden * projection).sum().backward()
    grad = wave.grad
    assert torch.isfinite(grad).all()
    assert float((grad != 0).float().mean()) > 0.9


def test_train_mode_leaves_spec_augment_and_layerdrop_off_in_wav2vec2():
    backbone = load_backbone("wav2vec2_base", random_init=True)[0]
    classifier = WaveformClassifier(backbone, EmotionHead(13, 768))
    classifier.train()
    model = backbone.model
    assert not model.training and not model.encoder.training and not model.feature_extractor.training
    assert model.encoder.layers[0].attention.training and model.encoder.dropout.training
    classifier.eval()
    assert not any(m.training for m in classifier.modules())


def test_whisper_log_mel_equals_the_feature_extractor_on_an_unpadded_clip():
    from transformers import WhisperFeatureExtractor

    from trustser.backbones.whisper import log_mel_one, whisper_mel_filters

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(SR + 77) * 0.05).astype(np.float32)
    x[: SR // 2] *= 1e-3  # a quiet half, so the max − 8 floor is exercised
    ours = log_mel_one(torch.from_numpy(x), whisper_mel_filters(80)).numpy()
    extractor = WhisperFeatureExtractor(feature_size=80)
    numpy_path = extractor._np_extract_fbank_features(x[None], "cpu")[0]
    public = extractor(x, sampling_rate=SR, padding="longest", return_tensors="np").input_features[0]
    assert ours.shape == numpy_path.shape == public.shape == (80, (SR + 77) // 160)
    np.testing.assert_allclose(ours, numpy_path, atol=1e-4)
    np.testing.assert_allclose(ours, public, atol=1e-5)


def test_wav2vec2_normalisation_equals_the_feature_extractor():
    from transformers import Wav2Vec2FeatureExtractor

    from trustser.backbones.hf_ssl import zero_mean_unit_var

    x = (np.random.default_rng(1).standard_normal(SR) * 0.05 + 0.01).astype(np.float32)
    theirs = Wav2Vec2FeatureExtractor(do_normalize=True)(x, sampling_rate=SR, return_tensors="np").input_values[0]
    np.testing.assert_allclose(zero_mean_unit_var(torch.from_numpy(x)).numpy(), theirs, atol=1e-5)


# ---------------------------------------------------------------------------------------------- batched attacks
# Batched FGSM / Gaussian noise must give what the per-clip path gives. Tolerances: statuses, clean and perturbed
# predictions and flips identical; ε within 1e-6 relative and the count of unperturbed samples within 0.1 % of the
# clip (a gradient entry at ~0 may change sign under another summation order; none did in our runs); achieved SNR
# within 1e-6 dB.
VARIED = {  # clips of different lengths (not all multiples of the 160-sample frame), labelled 0
    "robust": noise(1) + 0.5,
    "fragile_short": noise(7, n=9650) + 1e-4,
    "wrong": noise(3, n=12000) - 0.5,
    "silent": torch.zeros(8000),
    "fragile": noise(2) + 1e-4,
    "robust_long": noise(8, n=24000) + 0.5,
    "fragile_long": noise(9, n=20010) + 1e-4,
}


def assert_same_records(per_clip, batched):
    assert per_clip.keys() == batched.keys()
    for snr in per_clip:
        a, b = per_clip[snr], batched[snr]
        assert (a.n_attacked, a.n_flipped, a.n_incorrect, a.n_clean_mismatch, a.n_silent) == (
            b.n_attacked,
            b.n_flipped,
            b.n_incorrect,
            b.n_clean_mismatch,
            b.n_silent,
        )
        assert a.asr == b.asr or math.isnan(a.asr) and math.isnan(b.asr)
        for ra, rb in zip(a.records, b.records, strict=True):
            assert (ra.clip_id, ra.label, ra.status, ra.clean_pred, ra.adv_pred, ra.flipped, ra.n_samples) == (
                rb.clip_id,
                rb.label,
                rb.status,
                rb.clean_pred,
                rb.adv_pred,
                rb.flipped,
                rb.n_samples,
            ), ra.clip_id
            if ra.status == "attacked":
                assert rb.eps == pytest.approx(ra.eps, rel=1e-6)
                assert abs(rb.n_unperturbed - ra.n_unperturbed) <= 1e-3 * ra.n_samples
                assert rb.achieved_snr_db == pytest.approx(ra.achieved_snr_db, abs=1e-6)


def test_attack_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        AttackSettings(batch_size=0)


@pytest.mark.parametrize("attack", ["fgsm", "gaussian"])
@pytest.mark.parametrize("batch_size, window", [(2, 16), (3, 1), (8, 16)])
@pytest.mark.parametrize("given", [None, [1, 0, 0, 0, 0, 0, 0]])
def test_batched_attacks_equal_per_clip_attacks_on_clips_of_different_lengths(
    attack, batch_size, window, given, monkeypatch
):
    from trustser.metrics.safety import runner

    monkeypatch.setattr(runner, "SORT_WINDOW_BATCHES", window)  # window 1: several length-sorted windows
    ids, waves = list(VARIED), list(VARIED.values())
    kwargs = dict(clip_ids=ids, clean_predictions=given)
    per_clip = run_attack(
        stub_classifier(), waves, [0] * len(ids), attack, (30.0, 45.0), **kwargs, settings=AttackSettings(batch_size=1)
    )
    batched = run_attack(
        stub_classifier(),
        waves,
        [0] * len(ids),
        attack,
        (30.0, 45.0),
        **kwargs,
        settings=AttackSettings(batch_size=batch_size),
    )
    assert_same_records(per_clip, batched)
    report = batched[45.0]
    assert [r.clip_id for r in report.records] == ids  # input order, whatever the length sort did
    status = {r.clip_id: r.status for r in report.records}
    assert status["silent"] == "silent"
    expected = ("incorrect", "clean_mismatch") if given else ("attacked", "incorrect")
    assert (status["robust"], status["wrong"]) == expected
    if attack == "fgsm":
        flipped = {r.clip_id for r in report.records if r.flipped}
        assert flipped == {"fragile_short", "fragile", "fragile_long"}
        for r in report.records:
            if r.status == "attacked":
                assert r.achieved_snr_db == pytest.approx(45.0, abs=1e-4)  # float32 waveform rounding


def test_batch_size_one_is_the_per_clip_path_and_pgd_and_train_mode_never_batch(monkeypatch):
    from trustser.metrics.safety import runner

    def refuse(*args, **kwargs):
        raise AssertionError("batched path taken")

    monkeypatch.setattr(runner, "_attack_batch", refuse)
    run_attack(stub_classifier(), WAVES, LABELS, "fgsm", settings=AttackSettings(batch_size=1))
    run_attack(stub_classifier(), WAVES, LABELS, "gaussian", settings=AttackSettings(batch_size=1))
    run_attack(stub_classifier(), WAVES, LABELS, "pgd", settings=AttackSettings(batch_size=8, pgd_steps=1))
    run_attack(
        stub_classifier(with_noise_layers=True),
        WAVES,
        LABELS,
        "fgsm",
        settings=AttackSettings(batch_size=8, train_mode=True),
    )
    with pytest.raises(AssertionError, match="batched path"):
        run_attack(stub_classifier(), WAVES, LABELS, "fgsm", settings=AttackSettings(batch_size=2))


def test_the_padded_view_is_each_clips_own_view_with_nothing_on_the_padding():
    from trustser.metrics.safety import PaddedUnitIntervalView

    xs = [VARIED["fragile_short"], VARIED["robust_long"], VARIED["wrong"]]
    eps = [snr_epsilon(x, 30.0) for x in xs]
    view = PaddedUnitIntervalView(stub_classifier(), xs, eps)
    assert view.x.shape == (3, 24000) and view.lengths.tolist() == [9650, 24000, 12000]
    for i, (x, e) in enumerate(zip(xs, eps)):
        alone = UnitIntervalView(stub_classifier(), x, e)
        assert torch.equal(view.u0[i, : x.numel()], alone.u0)  # the same float64 arithmetic, row by row
        assert view.eps_unit <= alone.eps_unit  # one scalar budget inside every clip's headroom
    assert torch.equal(view.to_wave(view.u0), view.x)  # clean clips bit-identical, zeros after each
    pushed = view.to_wave(view.u0 + view.eps_unit)
    assert (pushed[~view.mask] == 0).all() and (pushed[view.mask] != view.x[view.mask]).all()
    assert float(view.u0.min()) - view.eps_unit > 0 and float(view.u0.max()) + view.eps_unit < 1


BATCH_LENGTHS = (3200, 5300, 4000, 6100)  # 0.2-0.4 s: full-size random-init models, backward on the CPU


@pytest.mark.slow
@pytest.mark.parametrize("name", ["whisper_tiny", "wav2vec2_base", "wavlm_base_plus", "apc", "tera"])
def test_batched_attacks_equal_per_clip_attacks_on_every_backbone_family(name):
    """A clip's logits do not depend on its padded batch, and batched FGSM / Gaussian give the per-clip results
    (random-init backbone and head; a wrong label and a silent clip exercise the skips)."""
    backbone = load_backbone(name, random_init=True)[0]
    torch.manual_seed(0)
    classifier = WaveformClassifier(backbone, EmotionHead(backbone.spec.num_hidden_states, backbone.spec.hidden_size))
    generator = torch.Generator().manual_seed(1)
    waves = [torch.randn(n, generator=generator) * 0.1 for n in BATCH_LENGTHS] + [torch.zeros(3000)]
    from trustser.metrics.safety.model import _pad

    with torch.no_grad():
        alone = torch.cat([classifier(w[None]) for w in waves[:-1]])
        together = classifier(*_pad(waves[:-1]))
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=1e-5)
    labels = alone.argmax(-1).tolist() + [0]
    labels[1] = (labels[1] + 1) % 4  # misclassified: not attacked
    for attack in ("fgsm", "gaussian"):
        per_clip = run_attack(classifier, waves, labels, attack, (10.0, 45.0), settings=AttackSettings(batch_size=1))
        batched = run_attack(classifier, waves, labels, attack, (10.0, 45.0), settings=AttackSettings(batch_size=3))
        assert_same_records(per_clip, batched)
        assert per_clip[45.0].n_attacked == 3 and per_clip[45.0].n_silent == 1


class CountingHead(MeanSignHead):
    """MeanSignHead that counts the clips it has classified (one per row of each forward)."""

    def __init__(self):
        super().__init__()
        self.clips_seen = 0

    def forward(self, hidden, mask):
        self.clips_seen += hidden.shape[0]
        return super().forward(hidden, mask)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_an_attack_reuses_the_clean_predictions_another_attack_made_and_skips_its_clean_forward(batch_size):
    # the caller says "wrong" is right: FGSM's waveform path finds the mismatch, Gaussian noise inherits it
    settings = AttackSettings(batch_size=batch_size)
    given = [0, 0, 0, 0]
    fgsm = run_attack(stub_classifier(), WAVES, LABELS, "fgsm", clip_ids=IDS, clean_predictions=given)[45.0]
    known = fgsm.waveform_predictions()
    assert known == [0, 0, 1, None]  # robust, fragile attacked; wrong a mismatch; silent never ran the model

    alone_head, reusing_head = CountingHead(), CountingHead()
    kwargs = dict(clip_ids=IDS, clean_predictions=given, settings=settings)
    alone = run_attack(
        WaveformClassifier(FramesBackbone(), alone_head, feature_dtype=None), WAVES, LABELS, "gaussian", **kwargs
    )
    reusing = run_attack(
        WaveformClassifier(FramesBackbone(), reusing_head, feature_dtype=None),
        WAVES,
        LABELS,
        "gaussian",
        waveform_predictions=known,
        **kwargs,
    )
    assert_same_records(alone, reusing)
    status = {r.clip_id: r.status for r in reusing[45.0].records}
    assert status == {"robust": "attacked", "fragile": "attacked", "wrong": "clean_mismatch", "silent": "silent"}
    # alone: 3 clean predictions (robust, fragile, wrong) + 2 noisy ones; reusing: only the 2 noisy ones
    assert (alone_head.clips_seen, reusing_head.clips_seen) == (5, 2)


def test_waveform_predictions_must_match_the_clips():
    with pytest.raises(ValueError, match="waveform_predictions"):
        run_attack(stub_classifier(), WAVES, LABELS, "gaussian", waveform_predictions=[0])
