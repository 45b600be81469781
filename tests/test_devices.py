"""``--device``: a schema field checked for its form, resolved to a device this machine has, logged with the run.

CPU results are bit-identical to a run that never heard of devices (every other test runs on the CPU through the
same code, ``device`` left at ``auto`` on a machine without a GPU); the CUDA path is checked by
``scripts/gpu_check.py`` on a machine with a GPU (``tests/test_gpu.py`` runs it there).
"""

from __future__ import annotations

import pytest
import torch

from trustser.config_schema import with_assignments
from trustser.devices import module_device, resolve_device
from trustser.errors import ConfigError
from trustser.run_config import RunConfig, check_device, config_hash


@pytest.mark.parametrize("setting", ["auto", "cpu", "cuda", "cuda:1", "CUDA:0"])
def test_device_settings_of_the_right_form_are_accepted(setting):
    assert RunConfig(device=setting).device == setting
    assert check_device(setting) == setting.lower()


@pytest.mark.parametrize("setting", ["gpu", "cuda:", "cuda:x", "mps", ""])
def test_other_device_settings_are_refused_naming_the_key_and_the_choices(setting):
    with pytest.raises(ConfigError, match=r"device: unknown value .*auto, cpu, cuda, cuda:N"):
        RunConfig(device=setting)


def test_the_device_is_reachable_by_set_and_does_not_change_what_a_configuration_is():
    moved = with_assignments(RunConfig(), [("device", "cpu")], source="--set")
    assert moved.device == "cpu" and config_hash(moved) == config_hash(RunConfig())


def test_auto_and_cpu_resolve_to_the_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")


def test_asking_for_cuda_without_one_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device 'cuda:0': torch sees no CUDA device.*--device cpu or auto"):
        resolve_device("cuda:0")


def test_a_cuda_index_beyond_the_machine_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    with pytest.raises(ConfigError, match=r"device 'cuda:3': this machine has 1 CUDA device\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:3")
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_a_module_is_where_its_parameters_or_buffers_are():
    assert module_device(torch.nn.Linear(2, 2)) == torch.device("cpu")
    assert module_device(torch.nn.ReLU()) == torch.device("cpu")  # nothing to place: the CPU


def test_cache_entries_record_the_device_they_were_computed_on(tmp_path):
    from trustser.features import entry_device, read_entry, write_entry

    hidden = torch.randn(3, 5, 4)
    write_entry(tmp_path / "gpu.safetensors", hidden, device="cuda")
    write_entry(tmp_path / "cpu.safetensors", hidden)
    assert entry_device(tmp_path / "gpu.safetensors") == "cuda" and entry_device(tmp_path / "cpu.safetensors") == "cpu"
    assert torch.equal(read_entry(tmp_path / "gpu.safetensors"), read_entry(tmp_path / "cpu.safetensors"))


def test_a_run_logs_the_device_asked_for_and_the_one_used(fold1_emodb):
    """A real (tiny) run with --device cpu logs what was asked and what was used."""
    import mlflow
    from click.testing import CliRunner

    from trustser.cli import main
    from run_flags import FAST_RUN

    result = CliRunner().invoke(
        main,
        [
            "run",
            *FAST_RUN,
            "--data-root",
            str(fold1_emodb),
            "--device",
            "cpu",
            "--bootstrap",
            "0",
            "--set",
            "log_model=false",
            "--set",
            "trust.reference=false",
        ],
    )
    assert result.exit_code == 0, result.output
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`trustser.kind` = 'experiment'")
    assert list(runs["params.device"]) == ["cpu"] and list(runs["params.device_used"]) == ["cpu"]
