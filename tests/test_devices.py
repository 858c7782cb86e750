"""Device-sensitive paths, on NEXTSCALE_TEST_DEVICE (default cpu): training steps of both stages, sampling,
editing, the bf16 and compiled paths. Every random draw must happen on a generator of the device it draws on
(a CPU generator cannot draw on a GPU): a spy checks each draw that names a generator."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from nextscale.data import DigitsDataset
from nextscale.editing import edit
from nextscale.registry import architecture
from nextscale.sampling import sample
from nextscale.seeding import uniform
from nextscale.training import TokenizerOptions, TrainConfig, VAROptions, train_tokenizer, train_var


class GeneratorDeviceSpy(TorchFunctionMode):
    """Records (op, generator device, device drawn on) for every torch call given a generator."""

    def __init__(self):
        super().__init__()
        self.draws = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        generator = kwargs.get("generator")
        if generator is not None:
            drawn_on = out.device if torch.is_tensor(out) else args[0].device
            self.draws.append((getattr(func, "__name__", str(func)), generator.device.type, drawn_on.type))
        return out

    def check(self, expect_some: bool = True):
        wrong = [d for d in self.draws if d[1] != d[2]]
        assert not wrong, f"draws on another device than their generator's: {wrong}"
        assert self.draws or not expect_some, "no draw with a generator was seen: the spy saw nothing"


@pytest.fixture(scope="module")
def digits8():
    return DigitsDataset("train", resolution=8), DigitsDataset("test", resolution=8)


@pytest.mark.slow
def test_training_steps_of_both_stages_run_on_the_device(digits8, device, tmp_path):
    train, test = digits8
    vae_config, var_config = architecture("tiny")
    var_config.num_classes = 10
    config = TrainConfig(steps=3, batch_size=8, warmup_steps=1, eval_every=3, save_every=3)
    spy = GeneratorDeviceSpy()
    with spy:
        vae, tok_metrics = train_tokenizer(
            vae_config,
            train,
            test,
            config,
            tmp_path / "tok",
            device=device,
            options=TokenizerOptions(revive_every=1, eval_batches=1),
            progress=False,
        )
        options = VAROptions(cond_drop_rate=0.5, drop_path_rate=0.2, eval_batches=1)  # label dropout draws
        var, var_metrics = train_var(
            var_config, vae, train, test, config, tmp_path / "var", options=options, device=device, progress=False
        )
    spy.check()
    assert {op for op, *_ in spy.draws} >= {"rand", "randint"}  # label dropout and code revival were drawn
    assert var.head.weight.device.type == device.type and vae.encoder.conv_in.weight.device.type == device.type
    assert tok_metrics["psnr"] > 0 and torch.isfinite(torch.tensor(var_metrics["val_loss"]))


def test_label_dropout_draws_the_same_labels_on_every_device(device):
    """The trainer's generator lives on the CPU and its draws move: a run draws the same numbers anywhere."""
    on_cpu = uniform((64,), torch.Generator().manual_seed(5), torch.device("cpu"))
    on_device = uniform((64,), torch.Generator().manual_seed(5), device)
    assert on_device.device.type == device.type and torch.equal(on_device.cpu(), on_cpu)


@pytest.mark.slow
def test_sampling_and_editing_run_on_the_device(tiny_models_on_device, device):
    vae, var = tiny_models_on_device
    spy = GeneratorDeviceSpy()
    with spy:
        a = sample(vae, var, [0, 1, 3], seed=4, cfg=2.0, top_k=8, top_p=0.9, more_smooth=True)
        b = sample(vae, var, None, batch_size=2, seed=4)  # labels drawn by the generator too
        images = torch.rand(2, 3, 8, 8, device=device)
        edited = edit(vae, var, images, (0.25, 0.25, 0.75, 0.75), labels=[1, 2], seed=0, cfg=2.0)
    spy.check()
    again = sample(vae, var, [0, 1, 3], seed=4, cfg=2.0, top_k=8, top_p=0.9, more_smooth=True)
    assert all(torch.equal(x, y) for x, y in zip(a.tokens, again.tokens))
    assert a.images.device.type == device.type and b.labels.device.type == device.type
    assert edited.images.shape == (2, 3, 8, 8) and torch.isfinite(edited.images).all()


def test_bf16_path_runs_on_the_device(tiny_models_on_device):
    vae, var = tiny_models_on_device
    out = sample(vae, var, [0, 1], seed=4, cfg=2.0, precision="bf16")
    assert out.images.dtype == torch.float32 and out.images.shape[0] == 2
    assert all(t.dtype == torch.long for t in out.tokens)


@pytest.mark.slow
def test_compiled_step_draws_the_tokens_of_the_plain_one(tiny_models_on_device, device):
    vae, var = tiny_models_on_device
    plain = sample(vae, var, [0, 1, 2], seed=4, cfg=2.0, top_k=8)
    backends = ["eager"] + (["inductor"] if device.type == "cuda" else [])  # inductor on CPU: minutes of C++
    for backend in backends:
        compiled = sample(vae, var, [0, 1, 2], seed=4, cfg=2.0, top_k=8, compile=backend)
        assert all(torch.equal(a, b) for a, b in zip(plain.tokens, compiled.tokens)), backend
