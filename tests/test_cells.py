"""The cell library: fused vs stepwise, torch's own cells, BPTT by hand, regularisers,
the compiled loop, stack options from config, and a user cell through the CLI."""

from __future__ import annotations

import sys
from functools import partial

import pytest
import torch
from conftest import ROOT, cli_inprocess, compose, fused_cell, runs_of, stack_spec, train
from torch import nn
from torch.func import functional_call

from rnnlab.cells.elman import ElmanCell
from rnnlab.cells.gfrnn import GatedFeedbackRNN
from rnnlab.cells.gru import GRUCell
from rnnlab.cells.lstm import LSTMCell
from rnnlab.cells.rnn import RNNReLUCell, RNNTanhCell
from rnnlab.errors import ConfigError
from rnnlab.models.regularisers import EmbeddingDropout, LockedDropout, embedding_dropout

USER_CELL_DIR = ROOT / "examples" / "user_cell"
sys.path.insert(0, str(USER_CELL_DIR))
from mgu import MGUCell  # noqa: E402

FUSED = {
    name: fused_cell(cls)
    for name, cls in {
        "rnn_tanh": RNNTanhCell,
        "rnn_relu": RNNReLUCell,
        "lstm": LSTMCell,
        "gru": GRUCell,
    }.items()
}
TORCH_CELLS = {
    "rnn_tanh": partial(nn.RNNCell, nonlinearity="tanh"),
    "rnn_relu": partial(nn.RNNCell, nonlinearity="relu"),
    "lstm": nn.LSTMCell,
    "gru": nn.GRUCell,
}
T, B, IN, H = 6, 3, 4, 5


@pytest.fixture
def float64():
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def random_state(cell, batch=B):
    return tuple(torch.randn_like(s) for s in cell.init_state(batch))


def grads(module, *extra):
    return [p.grad.clone() for p in module.parameters()] + [e.grad.clone() for e in extra]


def run_and_grads(cell, x, state, lengths=None):
    """Outputs, final state and every gradient of a fixed scalar of the whole sequence."""
    cell.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out, final = cell.sequence(x, state, lengths)
    weights = torch.linspace(-1, 1, out.numel()).view_as(out)
    loss = (out * weights).sum() + sum((s**2).sum() for s in final)
    loss.backward()
    return out.detach(), [s.detach() for s in final], grads(cell, x)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("lengths", [None, [6, 4, 1]], ids=["full", "padded"])
@pytest.mark.parametrize("name", list(FUSED))
def test_fused_and_stepwise_paths_agree_in_float64(name, lengths):
    fused = FUSED[name](input_size=IN, hidden_size=H, fused=True)
    stepwise = FUSED[name](input_size=IN, hidden_size=H, fused=False)
    stepwise.load_state_dict(fused.state_dict())
    assert (fused.path, stepwise.path) == ("fused", "stepwise")
    x, state = torch.randn(T, B, IN), random_state(fused)
    lengths = None if lengths is None else torch.tensor(lengths)
    a, b = run_and_grads(fused, x, state, lengths), run_and_grads(stepwise, x, state, lengths)
    for got, want in zip([a[0], *a[1], *a[2]], [b[0], *b[1], *b[2]], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("name", list(FUSED))
def test_each_stepwise_cell_matches_torch_cell_with_copied_weights(name):
    ours = FUSED[name](input_size=IN, hidden_size=H, fused=False)
    theirs = TORCH_CELLS[name](IN, H)
    w_ih, w_hh, b_ih, b_hh = ours.weights
    with torch.no_grad():
        theirs.weight_ih.copy_(w_ih)
        theirs.weight_hh.copy_(w_hh)
        theirs.bias_ih.copy_(b_ih)
        theirs.bias_hh.copy_(b_hh)
    x, state = torch.randn(T, B, IN), random_state(ours)
    out, final = ours.sequence(x, state)
    hx = state if len(state) > 1 else state[0]
    for t in range(T):
        hx = theirs(x[t], hx)
        h = hx[0] if isinstance(hx, tuple) else hx
        torch.testing.assert_close(out[t], h, rtol=1e-10, atol=1e-10)
        h_t, _ = ours(x[t], state)  # forward(x_t, state) is the same single step
        state = _
        torch.testing.assert_close(h_t, h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(final[-1], hx[-1] if isinstance(hx, tuple) else hx)


ALL_CELLS = {
    **{f"{n}-fused": fused_cell(c, fused=True) for n, c in FUSED.items()},
    **{f"{n}-stepwise": fused_cell(c, fused=False) for n, c in FUSED.items()},
    "lstm-layer_norm": fused_cell(LSTMCell, layer_norm=True),
    "gru-layer_norm": fused_cell(GRUCell, layer_norm=True),
    "elman": partial(ElmanCell, init_w_x=None, init_w_rec=None),
    "gfrnn": partial(GatedFeedbackRNN, layers=3),
    "mgu-user-cell": partial(MGUCell, forget_bias=1.0),
}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("name", list(ALL_CELLS))
def test_bptt_gradient_equals_sum_of_per_step_gradients(name):
    """Autograd through the unrolled sequence = Σ_t gradient w.r.t. step t's own weight copy."""
    cell = ALL_CELLS[name](input_size=IN, hidden_size=H)
    with torch.no_grad():  # layer-norm gains away from 1, so they matter in the check
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, state0 = torch.randn(T, B, IN), random_state(cell)
    readout = torch.randn(T, B, H)

    out, final = cell.sequence(x, state0)
    loss = (out * readout).sum() + sum((s**2).sum() for s in final)
    autograd = torch.autograd.grad(loss, list(cell.parameters()))

    names = [n for n, _ in cell.named_parameters()]
    copies = [
        {n: p.detach().clone().requires_grad_() for n, p in cell.named_parameters()}
        for _ in range(T)
    ]
    state, loss = state0, 0.0
    for t in range(T):
        h_t, state = functional_call(cell, copies[t], (x[t], state))
        loss = loss + (h_t * readout[t]).sum()
    loss = loss + sum((s**2).sum() for s in state)
    loss.backward()
    for name_, got in zip(names, autograd, strict=True):
        by_hand = sum(copies[t][name_].grad for t in range(T))
        torch.testing.assert_close(got, by_hand, rtol=1e-8, atol=1e-10, msg=name_)


@pytest.mark.usefixtures("float64")
def test_broadcasting_cells_step_inputs_against_states_as_if_expanded():
    """A cell that says ``broadcasts`` gives, for inputs (M, I) against states (B, 1, H),
    what its step gives on both expanded to (B·M, ...), gradients included."""
    said = {
        name for name, make in ALL_CELLS.items() if make(input_size=IN, hidden_size=H).broadcasts
    }
    assert said == set(ALL_CELLS) - {"gfrnn", "mgu-user-cell"}  # a user's cell need not
    for name in sorted(said):
        cell = ALL_CELLS[name](input_size=IN, hidden_size=H)
        x = torch.randn(4, IN, requires_grad=True)  # (M, I)
        state = tuple(s.unsqueeze(1).requires_grad_() for s in random_state(cell))  # (B, 1, H)
        h, new = cell(x, state)  # (B, M, H)
        assert h.shape == (B, 4, H) and all(n.shape == (B, 4, H) for n in new), name
        flat = tuple(s.expand(B, 4, H).reshape(B * 4, H) for s in state)
        h_flat, _ = cell(x.expand(B, 4, IN).reshape(B * 4, IN), flat)  # (B·M, H)
        torch.testing.assert_close(h.reshape(B * 4, H), h_flat)
        leaves = [x, *state, *cell.parameters()]
        weights = torch.linspace(-1, 1, h.numel()).view_as(h)
        got = torch.autograd.grad((h * weights).sum(), leaves)
        expected = torch.autograd.grad((h_flat * weights.reshape(B * 4, H)).sum(), leaves)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.usefixtures("float64")
def test_gfrnn_state_holds_every_inner_layer_and_feeds_back_across_layers():
    cell = GatedFeedbackRNN(input_size=IN, hidden_size=H, layers=3)
    state = random_state(cell)
    assert len(state) == 3 and cell.path == "stepwise"
    h, new = cell(torch.randn(B, IN), state)
    assert torch.equal(h, new[-1])
    # layer 1 reads the top layer's previous state through its global reset gate
    top_changed = (state[0], state[1], state[2] + 1.0)
    _, moved = cell(torch.zeros(B, IN), top_changed)
    _, base = cell(torch.zeros(B, IN), state)
    assert not torch.allclose(moved[0], base[0])


# -- regularisers ----------------------------------------------------------------------------


@pytest.mark.usefixtures("float64")
def test_weight_drop_is_dropconnect_on_the_fused_path_and_off_in_eval():
    plain = fused_cell(LSTMCell, fused=True)(input_size=IN, hidden_size=H)
    fused = fused_cell(LSTMCell, fused=True, weight_drop=0.5)(input_size=IN, hidden_size=H)
    stepwise = fused_cell(LSTMCell, fused=False, weight_drop=0.5)(input_size=IN, hidden_size=H)
    fused.load_state_dict(plain.state_dict())
    stepwise.load_state_dict(plain.state_dict())
    assert fused.path == "fused"
    x, state = torch.randn(T, B, IN), random_state(plain)
    torch.manual_seed(3)
    a = run_and_grads(fused.train(), x, state)
    torch.manual_seed(3)
    b = run_and_grads(stepwise.train(), x, state)
    for got, want in zip([a[0], *a[2]], [b[0], *b[2]], strict=True):  # the same mask, both paths
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    reference = plain.sequence(x, state)[0]
    assert not torch.allclose(a[0], reference)  # active in training
    torch.manual_seed(4)
    assert not torch.allclose(fused.sequence(x, state)[0], a[0])  # a new mask per sequence
    for cell in (fused, stepwise):
        assert torch.equal(cell.eval().sequence(x, state)[0], reference)  # exactly off in eval


@pytest.mark.usefixtures("float64")
def test_zoneout_keeps_units_in_training_and_uses_its_expectation_in_eval():
    spec = stack_spec(fused_cell(GRUCell, fused=True), (H,), zoneout=0.5)
    stack = spec.build(input_size=IN)
    (layer,) = stack.layers
    assert stack.path == "stepwise"  # zoneout is per step: not fused
    x = torch.randn(T, B, IN)
    out, _ = stack(x)
    kept = out[1:] == out[:-1]  # a zoned-out unit repeats its previous value
    assert 0.2 < kept.double().mean() < 0.8
    stack.eval()
    got, _ = stack(x)
    h, expected = layer.init_state(B)[0], []
    for t in range(T):
        new, _ = layer(x[t], (h,))
        h = 0.5 * h + 0.5 * new
        expected.append(h)
    torch.testing.assert_close(got, torch.stack(expected))
    torch.testing.assert_close(stack(x)[0], got, rtol=0, atol=0)  # deterministic


@pytest.mark.usefixtures("float64")
def test_locked_dropout_mask_is_constant_over_time_and_off_in_eval():
    drop = LockedDropout(0.5)
    x = torch.ones(7, 4, 10)
    y = drop(x)
    assert torch.equal(y, y[:1].expand_as(y))  # the same mask at every time step
    assert set(y.unique().tolist()) == {0.0, 2.0}
    assert not torch.equal(drop(x), y)  # a new mask per sequence
    assert torch.equal(drop.eval()(x), x)
    stack = stack_spec(fused_cell(LSTMCell), (H, H), dropout=0.5, locked_dropout=True).build(
        input_size=IN
    )
    assert isinstance(stack.dropout, LockedDropout) and stack.path == "fused"
    xs = torch.randn(T, B, IN)
    assert not torch.equal(stack(xs)[0], stack(xs)[0])
    stack.eval()
    assert torch.equal(stack(xs)[0], stack(xs)[0])


@pytest.mark.usefixtures("float64")
def test_embedding_dropout_drops_whole_words_and_is_off_in_eval():
    emb = EmbeddingDropout(50, 8, dropout=0.5)
    words = torch.arange(50).repeat(3).view(3, 50)  # every word at three positions
    out = emb(words)  # (3, 50, 8)
    dropped = (out == 0).all(-1)  # (3, 50): a dropped word is all zeros wherever it appears
    assert torch.equal(dropped[0], dropped[1]) and torch.equal(dropped[0], dropped[2])
    assert 5 < dropped[0].sum() < 45
    kept = ~dropped[0]
    torch.testing.assert_close(out[0, kept], 2 * emb.weight[kept])
    emb.eval()
    assert torch.equal(emb(words), nn.functional.embedding(words, emb.weight))
    assert torch.equal(embedding_dropout(emb, words, 0.5, training=False), emb(words))


@pytest.mark.usefixtures("float64")
def test_layer_norm_runs_stepwise_and_trains_its_gains():
    cell = fused_cell(LSTMCell, layer_norm=True)(input_size=IN, hidden_size=H)
    assert cell.path == "stepwise"
    out, _ = cell.sequence(torch.randn(T, B, IN) * 100, cell.init_state(B))
    out.sum().backward()
    assert cell.ln_ih.weight.grad.abs().sum() > 0 and cell.ln_c.weight.grad.abs().sum() > 0


# -- the compiled loop -----------------------------------------------------------------------


@pytest.mark.slow  # about 35 s of inductor compilation on two shared cores
def test_compiled_loop_equals_eager_and_does_not_recompile_for_new_batch_or_length():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    torch._dynamo.reset()
    counters.clear()
    eager = fused_cell(LSTMCell, fused=False)(input_size=IN, hidden_size=H)
    compiled = fused_cell(LSTMCell, fused=False)(input_size=IN, hidden_size=H)
    compiled.load_state_dict(eager.state_dict())
    compiled.set_loop_options(compiled=True, chunk=2)
    assert compiled.path == "compiled"
    x, state = torch.randn(5, B, IN), random_state(eager)  # 2 compiled chunks + 1 eager step
    a, b = run_and_grads(compiled, x, state), run_and_grads(eager, x, state)
    for got, want in zip([a[0], *a[1], *a[2]], [b[0], *b[1], *b[2]], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    for batch, steps in ((2, 4), (7, 9), (3, 3)):  # a short last batch, an eval batch size
        run_and_grads(compiled, torch.randn(steps, batch, IN), random_state(eager, batch))
    assert counters["stats"]["unique_graphs"] == graphs


# -- stack options from config, on a real task -----------------------------------------------


def test_per_layer_hidden_sizes_from_config():
    from rnnlab.compose import compose as build

    parts = build(compose(["cell=lstm", "cell.hidden_sizes=[12,7]", "device=cpu"]))
    model = parts.task.build_model(stack=parts.stack)
    assert [layer.hidden_size for layer in model.rnn.layers] == [12, 7]
    assert [layer.input_size for layer in model.rnn.layers] == [1, 12]
    assert model.readout.in_features == 7


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        (["cell=gfrnn", "cell.layer.layers=2"], "stepwise"),
        (["cell=lstm", "cell.hidden_sizes=[6,4]", "cell.bidirectional=true"], "fused"),
        (
            ["cell=gru", "cell.num_layers=2", "cell.dropout=0.3", "cell.locked_dropout=true"]
            + ["cell.layer.weight_drop=0.3"],
            "fused",
        ),
        (["cell=lstm", "cell.layer.layer_norm=true", "cell.zoneout=0.1"], "stepwise"),
    ],
    ids=["gfrnn", "bidirectional-widths", "gru-dropouts", "layer_norm-zoneout"],
)
def test_cell_options_train_on_bitcount_and_tag_the_path(overrides, path, workdir, client, capsys):
    train([*overrides, "trainer.max_epochs=2", "device=cpu"])
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FINISHED"
    assert run.data.tags["rnn_path"] == path
    assert f"rnn path: {path}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("cell.zoneout=1.5", "zoneout"),
        ("cell.layer.weight_drop=2", "weight_drop"),
        ("cell.compile_chunk=0", "chunk"),
        ("cell.hidden_sizes=[8,-1]", "positive"),
    ],
)
def test_bad_cell_options_are_config_errors(override, words):
    from rnnlab.compose import compose as build

    with pytest.raises(ConfigError, match=words):
        build(compose(["cell=lstm", override, "device=cpu"]))


def test_unimportable_user_cell_says_to_set_pythonpath(monkeypatch):
    from rnnlab.compose import compose as build

    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(USER_CELL_DIR)])
    monkeypatch.delitem(sys.modules, "mgu")
    with pytest.raises(ConfigError, match="PYTHONPATH"):
        build(compose(["cell=lstm", "cell.layer._target_=nowhere.NoCell", "device=cpu"]))


def test_user_cell_trains_through_the_cli_with_its_own_config_dir(workdir, client):
    done = cli_inprocess(
        "train",
        "--config-dir",
        str(USER_CELL_DIR / "conf"),
        "cell=mgu",
        "cell.num_layers=2",
        "trainer.max_epochs=2",
        "device=cpu",
        cwd=workdir,
        env={"PYTHONPATH": str(USER_CELL_DIR)},
    )
    assert done.returncode == 0, done.stderr
    assert "rnn path: stepwise" in done.stdout
    (run,) = runs_of(client, "bitcount")
    assert run.info.status == "FINISHED"
    assert run.data.params["cell.layer._target_"] == "mgu.MGUCell"
    assert run.data.tags["rnn_path"] == "stepwise"


def test_bench_cells_prints_ratios_to_fused_lstm(workdir):
    done = cli_inprocess(
        "bench", "cells", "--cells", "rnn_tanh", "--paths", "fused", "--paths", "stepwise",
        "--rounds", "1", "--reps", "1", cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ratio to fused nn.LSTM" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("rnn")]
    assert [r[:2] for r in rows] == [["rnn_tanh", "fused"], ["rnn_tanh", "stepwise"]]
    assert all(float(r[3]) > 0 for r in rows)
    bad = cli_inprocess("bench", "cells", "--cells", "nope", cwd=workdir)
    assert bad.returncode != 0 and "Unknown cell(s) for the benchmark: nope" in bad.stderr
