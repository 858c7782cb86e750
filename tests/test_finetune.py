"""Fine-tuning: `train --init` from every kind of source, the class rules, `--trainable` (groups and LoRA), the
merged export, and `train-tokenizer --init`."""

from dataclasses import replace

import pytest
import torch
from PIL import Image

from nextscale import VAR, VQVAE, load_model, save_model
from nextscale.cli import main
from nextscale.data import DigitsDataset
from nextscale.errors import NextscaleError, SettingError
from nextscale.registry import architecture
from nextscale.training import TrainConfig, Trainer, VAROptions, initial_var, train_var
from nextscale.training.distributed import Distributed
from nextscale.training.export import export_checkpoint
from nextscale.training.finetune import adapt_classes, class_plan, load_init_var, parse_class_map
from nextscale.training.trainable import PARAMETER_GROUPS, apply_trainable, merge_lora, parse_trainable
from nextscale.training.var_stage import VARStage
from tests.helpers import randomize_

QUICK = ["--steps", "2", "--batch-size", "8", "--eval-every", "2", "--device", "cpu", "--quiet", "--workers", "0"]


def tiny(num_classes=10, seed=0, classes=None):
    vae_config, var_config = architecture("tiny")
    torch.manual_seed(seed)
    vae = randomize_(VQVAE(vae_config), seed=seed + 1, std=0.1).eval()
    var = randomize_(VAR(replace(var_config, num_classes=num_classes)), seed=seed + 2).eval()
    var.provenance = {"tokenizer": vae.fingerprint(), **({"classes": list(classes)} if classes else {})}
    return vae, var


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model directory trained (in name) on the digits: classes "0" … "9"."""
    vae, var = tiny(classes=[str(c) for c in range(10)])
    return save_model(vae, var, tmp_path_factory.mktemp("init") / "model")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder of three classes: two the digits model has ("1", "7") and one it has not ("cat")."""
    root = tmp_path_factory.mktemp("folder") / "images"
    for label, name in enumerate(("1", "7", "cat")):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (60 * label, 30 * i, 90)).save(root / name / f"{i}.png")
    return root


def same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def quick_config(**overrides):
    return TrainConfig(**{"steps": 3, "batch_size": 8, "lr": 1e-2, "warmup_steps": 0, "eval_every": 3, **overrides})


# ---- what learns ---------------------------------------------------------------------------------------------


def test_trainable_specs_and_their_refusals():
    assert parse_trainable("all").everything
    assert parse_trainable("head, class").groups == ("head", "class")
    assert parse_trainable("lora").lora_rank == 16 and parse_trainable("lora:8,class").groups == ("class",)
    for bad, says in [
        ("", "empty"),
        ("lora:0", "positive LoRA rank"),
        ("lora:x", "positive LoRA rank"),
        ("all,class", "stands alone"),
        ("heads", "'heads'"),
        ("lora,lora:4", "twice"),
    ]:
        with pytest.raises(SettingError, match=says):
            parse_trainable(bad)
    with pytest.raises(SettingError, match="trainable"):
        VAROptions(trainable="nope")


@pytest.mark.parametrize("shared_aln", [False, True])
def test_the_groups_cover_every_parameter_once(shared_aln):
    _, config = architecture("tiny")
    var = VAR(replace(config, shared_aln=shared_aln))
    for name, _ in var.named_parameters():
        owners = [g for g in PARAMETER_GROUPS if parse_trainable(g).trains(name)]
        assert len(owners) == 1, (name, owners)
    groups = {g: [n for n, _ in var.named_parameters() if parse_trainable(g).trains(n)] for g in PARAMETER_GROUPS}
    assert groups["class"] == ["class_emb.weight"] and groups["head"] == ["head.weight", "head.bias"]
    assert all("ada" in n or n.startswith("head_nm.") for n in groups["adaln"]) and groups["adaln"]


def frozen_run(tmp_path, trainable: str):
    """A tiny transformer trained 3 steps on the digits with `trainable`; returns (initial, trained, trainer)."""
    vae, var = tiny()
    initial = {n: p.detach().clone() for n, p in var.named_parameters()}
    data = DigitsDataset("train", resolution=8)
    config = quick_config(extra={"trainable": trainable})  # as train_var records it for `export`
    options = VAROptions(trainable=trainable)
    var = initial_var(var.config, config, options, Distributed(), init=var)
    stage = VARStage(vae, var, data, None, config, options)
    trainer = Trainer(stage, config, tmp_path / "run", progress=False)
    trainer.fit()
    return initial, var, trainer


def test_frozen_groups_do_not_change_and_have_no_optimizer_state(tmp_path):
    initial, var, trainer = frozen_run(tmp_path, "adaln,head")
    learns = parse_trainable("adaln,head")
    optimised = {id(p) for p in trainer.optimizer.state}
    for name, p in var.named_parameters():
        if learns.trains(name):
            assert not torch.equal(p, initial[name]) and id(p) in optimised, name
        else:
            assert torch.equal(p, initial[name]) and p.grad is None and id(p) not in optimised, name


def test_lora_trains_only_its_adapters_and_exports_an_ordinary_model(tmp_path):
    initial, var, trainer = frozen_run(tmp_path, "lora:4")
    adapters = [n for n, p in var.named_parameters() if p.requires_grad]
    assert adapters and all(".lora_A." in n or ".lora_B." in n for n in adapters)
    assert all(
        torch.equal(p, initial[n.replace(".base_layer", "")]) for n, p in var.named_parameters() if "base_layer" in n
    )
    labels, x = torch.tensor([0, 3]), torch.randn(2, var.config.num_tokens - 1, var.config.latent_channels)
    with torch.no_grad():
        adapted = var.eval()(labels, x)
        merged = merge_lora(var)(labels, x)
    stage, exported, _ = export_checkpoint(tmp_path / "run")
    assert stage == "var" and isinstance(exported, VAR)
    assert not any("lora" in k or "base_layer" in k for k in exported.state_dict())
    with torch.no_grad():
        assert torch.equal(exported(labels, x), merged)  # the export is the merged model
    assert torch.allclose(merged, adapted, atol=1e-5, rtol=1e-5)  # merging changes only the order of the sums
    assert not torch.equal(exported.blocks[0].attn.mat_qkv.weight, initial["blocks.0.attn.mat_qkv.weight"])


def test_lora_with_groups_trains_the_adapters_and_the_groups():
    _, var = tiny()
    apply_trainable(var, "lora:2,class,head")
    learns = {n for n, p in var.named_parameters() if p.requires_grad}
    adapters = {n for n in learns if ".lora_" in n}
    assert learns - adapters == {"class_emb.weight", "head.weight", "head.bias"}
    assert len(adapters) == 2 * 4 * var.config.depth  # A and B of 4 linears per block


def test_lora_needs_the_attention_projection_called_as_a_module():
    """q, k, v come from the fused projection: an adapter on it must change them (B non-zero here)."""
    _, var = tiny()
    labels, x = torch.tensor([1]), torch.randn(1, var.config.num_tokens - 1, var.config.latent_channels)
    with torch.no_grad():
        before = var(labels, x)
        apply_trainable(var, "lora:2")
        for name, p in var.named_parameters():
            if "mat_qkv.lora_B" in name:
                p.normal_()
        assert not torch.equal(var(labels, x), before)


# ---- --init --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trainable", ["all", "lora:4,class"])
def test_init_from_a_saved_model_starts_from_its_weights(saved, tmp_path, trainable):
    var, tokenizer = load_init_var(saved)
    assert tokenizer == str(saved / "vae")
    vae = VQVAE.from_pretrained(saved / "vae")
    data = DigitsDataset("train", resolution=8)
    options = VAROptions(trainable=trainable)
    started, _ = train_var(
        var.config,
        vae,
        data,
        None,
        quick_config(),
        tmp_path / "r",
        options=options,
        init=var,
        stop_after=0,
        progress=False,
    )
    assert same_state(started, VAR.from_pretrained(saved / "var"))


def test_new_classes_keep_rows_take_the_mean_and_the_null_row_stays_last():
    _, var = tiny(num_classes=3, classes=["cat", "dog", "cow"])
    old = var.class_emb.weight.detach().clone()
    adapted, plan = adapt_classes(var, ["dog", "fox", "cat", "owl"], parse_class_map("cow=owl"))
    assert plan.rows == (1, None, 0, 2)
    rows = adapted.class_emb.weight
    assert rows.shape == (5, old.shape[1])
    assert torch.equal(rows[0], old[1]) and torch.equal(rows[2], old[0]) and torch.equal(rows[3], old[2])
    assert torch.allclose(rows[1], old[:3].mean(0)) and torch.equal(rows[4], old[3])  # the null row, last
    assert adapted.num_classes == 4 and adapted.provenance["classes"] == ["dog", "fox", "cat", "owl"]
    untouched = {k: v for k, v in var.state_dict().items() if not k.startswith("class_emb")}
    assert all(torch.equal(adapted.state_dict()[k], v) for k, v in untouched.items())
    assert "2 kept" not in plan.describe() and "3 kept" in plan.describe() and "1 new" in plan.describe()
    same, plan = adapt_classes(var, ["cat", "dog", "cow"])
    assert same is var and plan.unchanged


def test_the_class_map_takes_ids_and_names_and_refuses_what_it_cannot_place():
    assert class_plan(["0", "1"], ["a", "b"], {"b": "id:0"}).rows == (None, 0)
    assert class_plan(["0", "1", "2"], ["1", "2"]).rows == (1, 2)  # unnamed classes: the same id
    with pytest.raises(SettingError, match="class_map .*'zebra'.* not a class of the data"):
        class_plan(["0"], ["a"], {"zebra": "0"})
    with pytest.raises(SettingError, match="class_map .*'emu'"):
        class_plan(["cat"], ["a"], {"a": "emu"})
    for bad in ("cat", "cat=", "=a", "a=b,c=b"):
        with pytest.raises(SettingError, match="class_map"):
            parse_class_map(bad)


def test_train_init_on_a_folder_of_new_classes_end_to_end(saved, folder, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--init", str(saved), "--data", str(folder), "--run-dir", str(run), *QUICK]
    assert main([*args, "--class-map", "3=cat", "--trainable", "lora:4,class"]) == 0
    _, var = load_model(run / "model")
    assert var.provenance["classes"] == ["1", "7", "cat"] and var.num_classes == 3
    # the run records its start (by content) and its class map: a resume with others is refused
    assert main([*args, "--class-map", "3=cat", "--trainable", "lora:4,class", "--resume", "--steps", "3"]) == 0
    capsys.readouterr()
    assert main([*args, "--class-map", "4=cat", "--trainable", "lora:4,class", "--resume", "--steps", "4"]) == 2
    assert "class_map" in capsys.readouterr().err
    assert main(["train", "--init", str(run), "--data", str(folder), "--run-dir", str(tmp_path / "again"), *QUICK]) == 0
    assert main(["train", "--init", str(run), "--data", "digits", "--run-dir", str(tmp_path / "more"), *QUICK]) == 0
    err = capsys.readouterr().err
    assert "starting from" not in err  # --quiet
    frozen = ["train", "--init", str(saved), "--data", str(folder), "--run-dir", str(tmp_path / "frozen"), *QUICK]
    assert main([*frozen, "--trainable", "head"]) == 0  # "cat" is new, and its row cannot learn
    assert "warning: 1 new class starts from the mean of the old rows" in capsys.readouterr().err


def test_init_refusals_are_one_line(saved, folder, tmp_path, capsys):
    other_vae = VQVAE(replace(architecture("tiny")[0], vocab_size=16))
    other_vae.save_pretrained(tmp_path / "other")
    run = ["--data", str(folder), "--run-dir", str(tmp_path / "r"), *QUICK]
    cases = [
        (["train", "--init", str(saved), "--preset", "digits", *run], "has another architecture than the flags"),
        (["train", "--init", str(saved), "--tokenizer", str(tmp_path / "other"), *run], "codebook size 16"),
        (["train", "--init", str(saved), "--trainable", "lora:0", *run], "--trainable takes a positive LoRA rank"),
        (["train", "--init", str(saved), "--class-map", "3=dog", *run], "--class-map names 'dog'"),
        (["train", "--tokenizer", str(saved), "--class-map", "3=cat", *run], "--class-map applies with --init"),
        (["train", *run], "give --tokenizer"),
        (["train", "--init", str(saved / "vae"), *run], "not a 'var' model"),
        (["train", "--init", str(tmp_path / "nope"), *run], "nope"),
        (["train-tokenizer", "--init", str(saved), "--vocab-size", "64", *run], "vocab_size 32 (flags: 64)"),
        (["train-tokenizer", "--fresh-codebook", *run], "--fresh-codebook applies with --init"),
        (["train-tokenizer", "--trainable", "decoder", *run], "it needs the tokenizer to start from (--init)"),
        (["train-tokenizer", "--init", str(saved), "--trainable", "decoder", "--fresh-codebook", *run], "its codebook"),
        # the recipe's decoder-only run, refused before its data (absent here) is looked for
        (["train-tokenizer", "--recipe", "fashion-decoder", "--data", str(tmp_path / "none"), *run[2:]], "(--init)"),
    ]
    for args, says in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "r").exists()
    assert main(["bench", "--trainable", "lora:4"]) == 2
    assert "--trainable applies to --train" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["released", "trainer"])
def test_reference_files_are_sources(tmp_path, layout):
    vae, var = tiny(classes=None)
    if layout == "released":  # a bare state dict, whose tokenizer is not in it
        torch.save(var.state_dict(), source := tmp_path / "var.pth")
    else:  # a reference trainer checkpoint holds both
        blob = {"epoch": 1, "trainer": {"var_wo_ddp": var.state_dict(), "vae_local": vae.state_dict()}}
        torch.save(blob, source := tmp_path / "ar-ckpt-last.pth")
    loaded, tokenizer = load_init_var(source)
    assert same_state(loaded, var)
    assert (tokenizer == str(source)) if layout == "trainer" else tokenizer is None
    # (a tiny tokenizer's widths cannot be read off a .pth's tensors: the run takes it from a directory)
    vae.save_pretrained(tmp_path / "vae")
    run = tmp_path / "run"
    args = ["train", "--init", str(source), "--tokenizer", str(tmp_path / "vae"), "--data", "digits"]
    args += ["--run-dir", str(run), *QUICK]
    assert main(args) == 0
    assert load_model(run / "model")[1].num_classes == 10
    if layout == "released":
        without = ["train", "--init", str(source), "--data", "digits", "--run-dir", str(tmp_path / "x"), *QUICK]
        assert main(without) == 2


def test_the_tokenizer_fine_tunes_from_its_weights_and_keeps_its_codebook(saved, tmp_path):
    from nextscale.training import train_tokenizer

    init = VQVAE.from_pretrained(saved / "vae")
    data = DigitsDataset("train", resolution=8)
    for fresh in (False, True):
        started, _ = train_tokenizer(
            init.config,
            data,
            None,
            quick_config(),
            tmp_path / f"t{fresh}",
            init=init,
            fresh_codebook=fresh,
            stop_after=0,
            progress=False,
        )
        codebook = started.quantize.embedding.weight
        assert torch.equal(codebook, init.quantize.embedding.weight) != fresh
        rest = [k for k in init.state_dict() if "embedding" not in k and "ema_vocab" not in k]
        assert all(torch.equal(started.state_dict()[k], init.state_dict()[k]) for k in rest)
    run = tmp_path / "cli"
    common = ["--data", "digits", "--run-dir", str(run), *QUICK]
    assert main(["train-tokenizer", "--init", str(saved), *common]) == 0
    assert VQVAE.from_pretrained(run / "model").config == init.config
    with pytest.raises(NextscaleError, match="not a transformer's"):
        load_init_var(run)


def test_a_decoder_only_run_keeps_the_tokens_and_what_was_trained_on_them(saved, tmp_path, capsys):
    """`--trainable decoder` trains what turns tokens into pixels: the tokens stay bit for bit, so the transformer
    and the token shards of the initial tokenizer serve the new one, and the new one's runs say whose tokens they
    are, through any number of such runs."""
    from nextscale.data.tokens import TokenDataset
    from nextscale.training.var_stage import check_token_data
    from nextscale.weights.load import check_trained_with

    init = VQVAE.from_pretrained(saved / "vae")
    runs = [tmp_path / "decoder", tmp_path / "again"]
    for source, run, ema in zip([saved, runs[0] / "model"], runs, ["0", "0.5"]):  # an EMA of the decoder alone
        args = ["train-tokenizer", "--init", str(source), "--trainable", "decoder", "--data", "digits"]
        assert main([*args, "--run-dir", str(run), *QUICK, "--lr", "1e-2", "--ema", ema]) == 0
    tuned = VQVAE.from_pretrained(runs[-1] / "model")
    before, after = init.state_dict(), tuned.state_dict()
    kept = [k for k in before if k.split(".")[0] in VQVAE.TOKEN_PARTS and "ema_vocab" not in k]
    assert kept and all(torch.equal(before[k], after[k]) for k in kept)
    assert not torch.equal(before["decoder.conv_out.weight"], after["decoder.conv_out.weight"])
    img = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert all(torch.equal(a, b) for a, b in zip(init.img_to_idx(img), tuned.img_to_idx(img)))
    assert tuned.fingerprint() != init.fingerprint()
    assert tuned.tokens_fingerprint() == export_checkpoint(runs[0])[1].tokens_fingerprint() == init.fingerprint()
    tuned.save_pretrained(tmp_path / "fp16", dtype=torch.float16)  # other encoder weights: the record no longer holds
    rounded = VQVAE.from_pretrained(tmp_path / "fp16")
    assert rounded.provenance == tuned.provenance and rounded.tokens_fingerprint() == rounded.fingerprint()
    _, var = load_model(saved)
    check_trained_with(tuned, var, "the tokenizer", "the transformer")  # pairs with the initial one's transformer
    shards = tmp_path / "tokens"
    assert (
        main(["tokenize", "--data", "digits", "--tokenizer", str(saved / "vae"), "--out", str(shards), "--quiet"]) == 0
    )
    check_token_data(TokenDataset(shards), tuned)  # and trains on its tokens
    with pytest.raises(NextscaleError, match="holds tokens made by tokenizer"):
        check_token_data(TokenDataset(shards), VQVAE(init.config))
    capsys.readouterr()
    everything = ["train-tokenizer", "--init", str(saved), "--data", "digits", "--run-dir", str(runs[0]), *QUICK]
    assert main([*everything, "--lr", "1e-2", "--resume"]) == 2  # the option that differs, by name
    err = capsys.readouterr().err
    assert "settings: options.trainable (decoder → all), " in err and len(err.strip().splitlines()) == 1
