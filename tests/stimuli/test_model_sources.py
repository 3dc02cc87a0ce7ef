"""Where a network comes from: timm models, open_clip image towers with their zero-shot head, any named
network with a weights file (a state dict or a whole module), the model's own preprocessing, and clear
errors for a missing or unfitting file and for hub weights that are not in the cache offline. timm's own
tiny test models keep this quick."""

import numpy as np
import pytest
import torch
from PIL import Image

from stimuli.networks import (
    CLIP_PROMPT_TEMPLATE,
    NetworkLoadError,
    load_network,
    probe_input,
)


def _image():
    return Image.new("RGB", (300, 200), (200, 120, 40))


def test_a_timm_model_with_its_checkpoint_and_its_own_preprocessing(tmp_path):
    import timm
    from timm.data import resolve_data_config

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    net = load_network("timm:test_vit", checkpoint=str(tmp_path / "w.pt"), allow_download=False)
    assert net.source == "timm" and net.info["checkpoint"] == "w.pt" and len(net.info["sha256"]) == 64
    cfg = resolve_data_config({}, model=model)
    pp = net.info["preprocess"]
    assert pp["crop"] == cfg["input_size"][-1] and pp["mean"] == pytest.approx(list(cfg["mean"]))
    assert pp["interpolation"] == cfg["interpolation"]
    x = net.preprocess(_image())
    assert tuple(x.shape) == tuple(cfg["input_size"])
    with torch.no_grad():
        assert torch.equal(net.model(x[None]), model.eval()(x[None]))


def test_a_weights_file_that_does_not_fit_names_the_tensors(tmp_path):
    import timm

    torch.save(timm.create_model("test_convnext", pretrained=False).state_dict(), tmp_path / "other.pt")
    with pytest.raises(NetworkLoadError, match="other.pt does not fit timm model test_vit"):
        load_network("timm:test_vit", checkpoint=str(tmp_path / "other.pt"))


def test_a_missing_weights_file_is_named(tmp_path):
    for network in ("vit_b_32", "timm:test_vit", "open_clip:RN50"):
        with pytest.raises(NetworkLoadError, match="weights file not found: .*nowhere.pt"):
            load_network(network, checkpoint=str(tmp_path / "nowhere.pt"))


def test_hub_weights_missing_offline_are_an_error_naming_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(NetworkLoadError, match=r"not in the hub cache \(.*hf\).*--checkpoint"):
        load_network("timm:test_vit", weights="DEFAULT", allow_download=False)


def test_a_whole_module_file_and_the_old_file_and_architecture_form(tmp_path):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    model = mobilenet_v3_small().eval()
    torch.save(model, tmp_path / "whole.pt")
    torch.save(model.state_dict(), tmp_path / "state.pt")
    whole = load_network("mobilenet_v3_small", checkpoint=str(tmp_path / "whole.pt"))
    by_file = load_network(str(tmp_path / "state.pt"), architecture="mobilenet_v3_small")
    x = probe_input(by_file)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(whole.model(x), expected) and torch.equal(by_file.model(x), expected)
    assert whole.info["format"] == "module" and by_file.info["format"] == "state_dict"


def test_an_open_clip_tower_classifies_by_zero_shot_prompts(tmp_path):
    import open_clip

    torch.manual_seed(0)
    clip = open_clip.create_model("RN50", pretrained=None).eval()
    torch.save(clip.state_dict(), tmp_path / "clip.pt")
    tower = load_network("open_clip:RN50", checkpoint=str(tmp_path / "clip.pt"), allow_download=False)
    assert tower.info["prompt_template"] == CLIP_PROMPT_TEMPLATE == "a photo of a {}."
    assert tower.info["preprocess"]["interpolation"] == "bicubic"
    net = tower.for_classes(["cat", "dog", "bird"])
    assert net.n_classes == 3 and net.class_names == ["cat", "dog", "bird"]
    x = net.preprocess(_image())[None]
    tokenizer = open_clip.get_tokenizer("RN50")
    with torch.no_grad():
        logits = net.model(x)
        image = torch.nn.functional.normalize(clip.encode_image(x), dim=-1)
        text = torch.nn.functional.normalize(
            clip.encode_text(tokenizer([f"a photo of a {c}." for c in ("cat", "dog", "bird")])), dim=-1
        )
        # CLIP's own zero-shot logits: the cosines times the logit scale
        torch.testing.assert_close(logits, clip.logit_scale.exp() * image @ text.T, rtol=1e-4, atol=1e-4)
    with pytest.raises(NetworkLoadError, match="class names"):
        tower.for_classes(None)


def test_the_layers_command_prints_layouts(capsys):
    from stimuli.__main__ import main

    assert main(["layers", "--network", "timm:test_vit", "--offline"]) == 0
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["blocks.0"][0] == "BTC" and rows["patch_embed.proj"][0] == "BCHW"


def test_a_transformer_job_end_to_end_with_class_token_pooling(tmp_path):
    """Every stage on a (tiny) transformer: the class token as the unit's response, a new sparse
    autoencoder, completeness, influence, decision measures, feature visualizations and Integrated
    Gradients overlays, in one job."""
    import timm

    from stimuli.artifact import read_manifest
    from stimuli.config import StimulusConfig
    from stimuli.pipeline import run

    torch.manual_seed(0)
    torch.save(timm.create_model("test_vit", pretrained=False).state_dict(), tmp_path / "vit.pt")
    config = StimulusConfig.of(
        network="timm:test_vit",
        checkpoint=str(tmp_path / "vit.pt"),
        allow_download=False,
        layers=["blocks.3"],
        bases=["neuron", "pca", "batchtopk"],
        n_components={"batchtopk": 16},
        batchtopk={"k": 4, "epochs": 5},
        pooling="class_token",
        n_units=1,
        max_images=48,
        n_references=2,
        n_queries=2,
        strip_length=3,
        n_strips=1,
        render_size=32,
        completeness_k=[1, 4],
        completeness_max_images=4,
        influence_class=0,
        influence_distribution="all",
        influence_max_images=4,
        decision_max_images=8,
        ablation_max_units=1,
        surrogate=False,
        figures=False,
        attribution_overlays=True,
        attribution_method="integrated_gradients",
        feature_vis={"steps": 4},
        batch_size=16,
        device="cpu",
    )
    m = read_manifest(run(config, tmp_path / "out"))
    for e in m["layers"]:
        assert (e["layout"], e["n_channels"], e["prefix_tokens"], e["grid"], e["pooling"]) == (
            "BTC",
            64,
            1,
            [10, 10],
            "class_token",
        )
        assert e["completeness"]["k"] == [1, 4] and e["attribution_method"] == "integrated_gradients"
        (unit,) = e["units"]
        assert len(unit["attribution_overlays_max"]) == 2 and len(unit["synthetic_max"]) == 2
        assert np.isfinite(unit["measures"]["influence"]) and "ablation_accuracy_drop" in unit["measures"]
    assert m["network"]["source"] == "timm" and m["network"]["preprocess"]["crop"] == 160
