"""Weights the way the ecosystem gets them: after --weights, packaged weights and the local caches, a backbone's
published Hugging Face repo is downloaded into the Hugging Face cache, and an s3prl checkpoint from s3prl's URL into
s3prl's cache, unless offline. A stand-in hub on 127.0.0.1 serves tiny real-architecture models through the endpoint
protocol huggingface_hub speaks; an unreachable hub or offline mode gives one line, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub  # imported now, while HF_HUB_OFFLINE is what the session started with (see `online`)
import pytest
import torch
from click.testing import CliRunner

from trustser.backbones import get_backbone_spec
from trustser.backbones.loading import load_backbone
from trustser.backbones.weights import plan_weights, resolve_weights, s3prl_download_path, s3prl_fetch_url
from trustser.cli import main
from trustser.errors import WeightsNotFoundError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class StandInHub:
    """A local Hugging Face Hub: ``/api/models/{repo}/revision/{rev}`` lists a repo's files (``siblings``, ``sha``),
    HEAD/GET ``/{repo}/resolve/{rev}/{file}`` serve one with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``, as
    huggingface_hub's ``model_info`` / ``get_hf_file_metadata`` / ``http_get`` expect. s3prl's URLs
    (``https://huggingface.co/<repo>/resolve/main/<file>``) are resolve paths too. ``requests`` records every call."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self.answer(body=False)

            def do_GET(self) -> None:
                self.answer(body=True)

            def answer(self, body: bool) -> None:
                path = self.path.split("?")[0]
                hub.requests.append((self.command, path))
                listing = re.fullmatch(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)", path)
                resolve = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)
                if listing and listing["repo"] in hub.repos:
                    files = hub.repos[listing["repo"]]
                    data = json.dumps(
                        {
                            "id": listing["repo"],
                            "sha": COMMIT,
                            "siblings": [{"rfilename": name} for name in sorted(files)],
                        }
                    ).encode()
                    self.send(200, data, {"Content-Type": "application/json"}, body)
                elif resolve and resolve["file"] in hub.repos.get(resolve["repo"], {}):
                    data = hub.repos[resolve["repo"]][resolve["file"]]
                    self.send(
                        200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, body
                    )
                else:
                    code = "EntryNotFound" if resolve and resolve["repo"] in hub.repos else "RepoNotFound"
                    self.send(404, b"not found", {"X-Error-Code": code}, body)

            def send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_repo(self, repo_id: str, directory: Path, files: list[str] | None = None) -> None:
        names = files or sorted(p.name for p in directory.iterdir() if p.is_file())
        self.repos[repo_id] = {name: (directory / name).read_bytes() for name in names}

    def fetched(self) -> list[str]:
        """Files whose bytes were sent (GET on a resolve path)."""
        return [path.rsplit("/", 1)[1] for method, path in self.requests if method == "GET" and "/resolve/" in path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub():
    server = StandInHub()
    yield server
    server.stop()


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Online, with empty Hugging Face and s3prl caches under tmp_path.

    huggingface_hub reads HF_HUB_OFFLINE when it is imported and caches its HTTP session: if the session started
    offline, both are put online here (trustser itself reads the variable on every resolution)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRUSTSER_S3PRL_URL_BASE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a user's proxy must not carry the stand-in hub's calls
    monkeypatch.setattr("pathlib.Path.home", lambda: tmp_path / "home")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    huggingface_hub.utils.reset_sessions()
    yield tmp_path / "hf" / "hub"
    huggingface_hub.utils.reset_sessions()


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """transformers' WhisperModel shrunk (2+2 layers, width 32, 64 tokens), saved as a Hub repo would hold it:
    config.json, generation_config.json, model.safetensors, plus the same weights as pytorch_model.bin."""
    from transformers import WhisperConfig, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=64,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_target_positions=32,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=2,
        decoder_start_token_id=3,
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperModel(config).eval()
    directory = tmp_path_factory.mktemp("tiny-whisper")
    model.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")
    return directory, model.encoder.conv1.weight.detach().clone()


def snapshot_files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def test_nothing_local_downloads_the_published_repo_into_the_hf_cache_then_the_cache_serves_it(
    hub, online, tiny_whisper, monkeypatch
):
    directory, conv1 = tiny_whisper
    hub.add_repo("openai/whisper-tiny", directory)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    spec = get_backbone_spec("whisper_tiny")
    plan = plan_weights(spec)
    assert plan.status == "download" and plan.detail.startswith(f"would download openai/whisper-tiny from {hub.url}")
    assert hub.requests == []  # planning (trustser ls) touches no network

    backbone, source = load_backbone("whisper_tiny")
    assert source.kind == "hf_download" and not source.is_random
    assert source.path.is_relative_to(online / "models--openai--whisper-tiny" / "snapshots")
    assert snapshot_files(source.path) == {"config.json", "model.safetensors"}  # safetensors preferred, only it
    assert sorted(hub.fetched()) == ["config.json", "model.safetensors"]
    assert torch.equal(backbone.encoder.conv1.weight, conv1)
    assert source.identity == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()

    hub.stop()  # the second resolution needs no hub, online or off
    again = resolve_weights(spec)
    offline = resolve_weights(spec, offline=True)
    assert again == offline and again.kind == "hf_cache" and again.path == source.path
    assert again.identity == source.identity  # the feature cache is shared by the download and the cache hit
    assert plan_weights(spec, offline=True).status == "local"


def test_a_repo_without_safetensors_gives_pytorch_model_bin(hub, online, tiny_whisper, monkeypatch):
    directory, conv1 = tiny_whisper
    hub.add_repo("openai/whisper-small", directory, ["config.json", "pytorch_model.bin"])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    backbone, source = load_backbone("whisper_small")
    assert source.kind == "hf_download" and snapshot_files(source.path) == {"config.json", "pytorch_model.bin"}
    assert torch.equal(backbone.encoder.conv1.weight, conv1)


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE=1", "offline=True"])
def test_offline_with_nothing_cached_is_one_line_naming_repo_caches_and_switch(
    hub, online, monkeypatch, how, tiny_whisper
):
    hub.add_repo("openai/whisper-tiny", tiny_whisper[0])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    if how.startswith("HF_HUB_OFFLINE"):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights(get_backbone_spec("whisper_tiny"), offline=True if how == "offline=True" else None)
    message = str(caught.value)
    assert "\n" not in message and "openai/whisper-tiny" in message
    assert f"Hugging Face cache {online}" in message
    assert "HF_HUB_OFFLINE" in message and "--offline" in message and "--weights PATH" in message
    assert hub.requests == []
    assert plan_weights(get_backbone_spec("whisper_tiny"), offline=True).status == "unavailable"


def test_an_unreachable_hub_is_one_cli_line_with_exit_2(online, monkeypatch, fold1_emodb):
    unreachable = closed_port_url()
    monkeypatch.setenv("HF_ENDPOINT", unreachable)
    out = CliRunner().invoke(main, ["run", "--backbone", "whisper_tiny", "--data-root", str(fold1_emodb)])
    assert out.exit_code == 2, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.output
    line = lines[0]
    assert line.startswith("trustser: error: no pretrained weights for backbone 'whisper_tiny'")
    assert f"downloading openai/whisper-tiny from {unreachable}" in line and "failed (" in line
    assert f"Hugging Face cache {online}" in line and "HF_HUB_OFFLINE=1 or --offline" in line


def test_run_offline_flag_downloads_nothing(hub, online, tiny_whisper, monkeypatch, fold1_emodb):
    hub.add_repo("openai/whisper-tiny", tiny_whisper[0])
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # recorded, so the value --offline sets is undone after the test
    out = CliRunner().invoke(main, ["run", "--backbone", "whisper_tiny", "--data-root", str(fold1_emodb), "--offline"])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1
    assert "offline (HF_HUB_OFFLINE=1 or --offline)" in out.output and "openai/whisper-tiny" in out.output
    assert hub.requests == []


def test_ls_says_per_backbone_local_or_would_download_without_the_network(hub, online, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    rows = {r["name"]: r for r in json.loads(CliRunner().invoke(main, ["ls", "--json"]).output)}
    assert rows["wav2vec2_base"]["weights_status"] == "download" and rows["wav2vec2_base"]["weights"] is None
    assert rows["wav2vec2_base"]["weights_detail"].startswith(f"would download facebook/wav2vec2-base from {hub.url}")
    assert rows["apc"]["weights_kind"] == "s3prl_download"
    text = CliRunner().invoke(main, ["ls", "--offline"]).output
    assert re.search(r"wavlm_base_plus .* weights: not available offline", text)
    assert hub.requests == []


def test_an_s3prl_checkpoint_is_downloaded_from_its_url_into_s3prls_cache(hub, online, monkeypatch, tmp_path):
    """A real (randomly initialised) APC checkpoint in s3prl's format, served at s3prl's URL path; it lands under
    s3prl's own file name for the published URL and loads through s3prl's expert."""
    from trustser.backbones.s3prl_models import RANDOM_CHECKPOINTS

    spec = get_backbone_spec("apc")
    served = tmp_path / "served"
    served.mkdir()
    checkpoint = RANDOM_CHECKPOINTS["apc"](spec)
    torch.save(checkpoint, served / "apc_360hr.ckpt")
    hub.add_repo("leo19941227/apc_series", served)
    monkeypatch.setenv("TRUSTSER_S3PRL_URL_BASE", hub.url)
    assert s3prl_fetch_url(spec.s3prl_url) == f"{hub.url}/leo19941227/apc_series/resolve/main/apc_360hr.ckpt"

    backbone, source = load_backbone("apc")
    assert source.kind == "s3prl_download" and source.path == s3prl_download_path(spec.s3prl_url)
    assert source.path.read_bytes() == (served / "apc_360hr.ckpt").read_bytes()
    assert {p.name for p in source.path.parent.iterdir()} == {source.path.name, source.path.name + ".lock"}
    name, tensor = next(iter(checkpoint["model"].items()))
    assert torch.equal(backbone.expert.model.state_dict()[name], tensor)

    hub.stop()
    again = resolve_weights(spec)
    assert again.kind == "s3prl_cache" and again.path == source.path and again.identity == source.identity


def test_an_unreachable_s3prl_url_is_one_line_naming_url_and_cache(online, monkeypatch):
    base = closed_port_url()
    monkeypatch.setenv("TRUSTSER_S3PRL_URL_BASE", base)
    with pytest.raises(WeightsNotFoundError) as caught:
        resolve_weights(get_backbone_spec("tera"))
    message = str(caught.value)
    assert "\n" not in message and f"downloading {base}/s3prl/tera/resolve/main/" in message
    assert "s3prl's download cache for https://huggingface.co/s3prl/tera" in message
    assert "TRUSTSER_S3PRL_URL_BASE" in message and "HF_HUB_OFFLINE=1 or --offline" in message
    assert not any(s3prl_download_path(get_backbone_spec("tera").s3prl_url).parent.glob("*.ckpt"))
