"""The scan cells (minGRU, minLSTM, LRU): the parallel path against the sequential one in
float64, gradcheck on both, padding and bidirectional stacks, extreme gates, the block
options, windows and the memory check, and the tasks that run them."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from conftest import stack_spec

from rnnlab.cells import minimal, scan_cell
from rnnlab.cells.lru import LRUCell
from rnnlab.cells.mingru import MinGRUCell
from rnnlab.cells.minlstm import MinLSTMCell
from rnnlab.errors import ConfigError

CELLS = {
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
    "lru": partial(LRUCell, r_min=0.4, r_max=0.99, max_phase=6.283),
}
#: the scan's kernels (rnnlab.cells.scan): the per-step loop, and blocks of 4 steps; and
#: "pieces", the loop with the minimal cells' node cut into pieces of 2-3 steps (at 6-8
#: lanes; at the tests' sizes the node is otherwise one piece)
KERNELS = {"loop": None, "blocked": 4, "pieces": None}
PIECE = {"pieces": 20}


def use_kernel(monkeypatch, kernel: str) -> None:
    monkeypatch.setattr(scan_cell, "block_size", lambda steps, lanes, device: KERNELS[kernel])
    monkeypatch.setattr(minimal, "CPU_PIECE", PIECE.get(kernel, minimal.CPU_PIECE))


IN, H, B = 3, 4, 2


@pytest.fixture
def float64():
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def make(name: str, scan: str = "parallel", *, input_size: int = IN, hidden: int = H):
    cell = CELLS[name](input_size=input_size, hidden_size=hidden)
    cell.set_loop_options(scan=scan)
    return cell


def random_state(cell, batch=B):
    return tuple(torch.randn_like(s) for s in cell.init_state(batch))


def run(cell, x, state, lengths=None, *, scan: str):
    cell.set_loop_options(scan=scan)
    return cell.sequence(x, state, lengths)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("steps", [1, 7, 512, 4096])
@pytest.mark.parametrize("name", list(CELLS))
def test_parallel_equals_sequential_with_a_carried_state(name, steps, monkeypatch):
    """Both kernels of the parallel scan give the one-step path's outputs and final state to
    1e-5 (in fact to rounding), from a random state; and a sequence cut in two, the state
    carried across the cut, gives the same as the whole."""
    cell = make(name)
    x, state = torch.randn(steps, B, IN), random_state(cell)
    with torch.no_grad():
        want, want_state = run(cell, x, state, scan="sequential")
        for kernel in KERNELS:
            use_kernel(monkeypatch, kernel)
            got, got_state = run(cell, x, state, scan="parallel")
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=kernel)
            for g, w in zip(got_state, want_state, strict=True):
                torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=kernel)
        cut = steps // 2 + 1
        first, carried = cell.sequence(x[:cut], state)
        second, final = cell.sequence(x[cut:], carried) if cut < steps else (first[:0], carried)
    torch.testing.assert_close(torch.cat([first, second]), want, rtol=1e-5, atol=1e-5)
    for g, w in zip(final, want_state, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("path", [*KERNELS, "sequential"])
@pytest.mark.parametrize("name", list(CELLS))
def test_gradcheck_on_both_paths_and_equal_weight_gradients(name, path, monkeypatch):
    cell = make(name, "sequential" if path == "sequential" else "parallel", input_size=2, hidden=3)
    if path != "sequential":
        use_kernel(monkeypatch, path)
    x = torch.randn(6, 2, 2, requires_grad=True)
    state = tuple(s.requires_grad_() for s in random_state(cell))
    lengths = torch.tensor([6, 4])

    def outputs(x, *state):
        out, final = cell.sequence(x, state, lengths)
        return (out, *final)

    assert torch.autograd.gradcheck(outputs, (x, *state))
    # the weights' gradients are those of the other path
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs(x, *state))
    mine = torch.autograd.grad(loss, list(cell.parameters()))
    cell.set_loop_options(scan="parallel" if path == "sequential" else "sequential")
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outputs(x, *state))
    theirs = torch.autograd.grad(loss, list(cell.parameters()))
    for got, want in zip(mine, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


BLOCK = {"residual": True, "pre_norm": True, "ffn": "glu", "ffn_mult": 2}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("name", list(CELLS))
def test_padded_batch_equals_each_sequence_alone(name, bidirectional):
    spec = stack_spec(CELLS[name], (H, H), bidirectional=bidirectional, scan="parallel", **BLOCK)
    stack = spec.build(input_size=IN).eval()
    lengths = torch.tensor([6, 3, 1])
    x = torch.randn(6, 3, IN)
    out, states = stack(x, lengths=lengths)
    assert torch.all(out[3:, 1] == 0) and torch.all(out[1:, 2] == 0)  # padding outputs are 0
    for b, n in enumerate(lengths.tolist()):
        alone, alone_states = stack(x[:n, b : b + 1])
        torch.testing.assert_close(out[:n, b : b + 1], alone, rtol=1e-10, atol=1e-12)
        for layer, layer_alone in zip(states, alone_states, strict=True):
            for s, s_alone in zip(layer, layer_alone, strict=True):
                torch.testing.assert_close(s[b : b + 1], s_alone, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
@pytest.mark.parametrize("name", list(CELLS))
def test_extreme_pre_activations_give_finite_outputs_and_gradients(name, scan):
    torch.manual_seed(0)
    cell = make(name, scan)
    x = torch.randn(20, B, IN)
    x = (x / x.abs() * 1e4).requires_grad_()  # gate pre-activations of ±1e4 and more
    with torch.no_grad():
        for p in cell.parameters():
            if p.dim() == 2:
                p.copy_(torch.sign(torch.randn_like(p)))
    out, final = cell.sequence(x, cell.init_state(B))
    (out.sum() + sum(s.sum() for s in final)).backward()
    assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in final)
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
@pytest.mark.parametrize("name", list(CELLS))
def test_under_bf16_autocast_the_state_stays_fp32_and_tracks_the_fp32_run(name, scan):
    """trainer.precision=bf16 (and auto on AMX CPUs and Ampere GPUs): the projection comes
    out in bf16, the recurrence runs in the state's fp32. Both paths failed on the dtype
    mismatch before (their kernels need one dtype)."""
    torch.manual_seed(0)
    cell = make(name, scan, input_size=8, hidden=16)
    x, state = torch.randn(40, B, 8), random_state(cell)
    reference, _ = cell.sequence(x, state)
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = cell.sequence(x, state)
    assert all(s.dtype == torch.float32 for s in final)
    out.float().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (out.float() - reference).abs().max() < 0.05  # bf16 projections, fp32 recurrence


#: minLSTM's gate biases (forget, input): both gates underflow in float64 (σ(−800) = 0, so
#: the parallel path's ratio i / (f + i) would be 0/0 and it takes the log-space form, where
#: z = σ(k_i − k_f) is far from 0 and 1), one underflows, both saturate at 1, and in between
GATE_REGIMES = {
    "both-underflow": (-800.0, -801.5),
    "one-underflows": (-800.0, 3.0),
    "both-saturate": (40.0, 38.0),
    "moderate": (0.5, -0.5),
}


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("bias", list(GATE_REGIMES.values()), ids=list(GATE_REGIMES))
def test_minlstm_parallel_gate_equals_the_log_space_form_with_exact_gradients(bias):
    """The parallel path computes z = i / (f + i) from sigmoids with a hand-written backward,
    the one-step path σ(log i − log f) in autograd: equal values, and gradcheck passes on
    the parallel path in every regime of the gates (a wrong ∂z/∂k fails it)."""
    cell = make("minlstm", input_size=2, hidden=3)
    with torch.no_grad():
        cell.linear.bias[:3] = bias[0]
        cell.linear.bias[3:6] = bias[1]
    x = torch.randn(6, B, 2, requires_grad=True)
    h0 = torch.randn(B, 3, requires_grad=True)

    def outputs(x, h0):
        out, (h,) = cell.sequence(x, (h0,))
        return out, h

    with torch.no_grad():
        want = run(cell, x, (h0,), scan="sequential")
        got = run(cell, x, (h0,), scan="parallel")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(outputs, (x, h0))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("name", list(CELLS))
def test_a_stack_stepped_one_token_at_a_time_equals_the_whole_sequence(name):
    """What generation and beam search rely on: step() (the cells' sequential path and the
    blocks per token) reproduces forward() (the parallel scan)."""
    spec = stack_spec(CELLS[name], (H, 5), scan="parallel", **{**BLOCK, "ffn": "mlp"})
    stack = spec.build(input_size=IN).eval()
    assert stack.path == "parallel"
    x = torch.randn(8, B, IN)
    whole, final = stack(x)
    state = stack.init_state(B)
    for t in range(8):
        out, state = stack.step(x[t], state)
        torch.testing.assert_close(out, whole[t], rtol=1e-10, atol=1e-12)
    for layer, layer_whole in zip(state, final, strict=True):
        for s, w in zip(layer, layer_whole, strict=True):
            torch.testing.assert_close(s, w, rtol=1e-10, atol=1e-12)


def test_a_first_layer_fed_raw_features_reads_them_without_norm_or_residual():
    """A LayerNorm over one raw feature is identically 0: the block must not put one there."""
    stack = stack_spec(CELLS["mingru"], (H, H), **BLOCK).build(input_size=1)
    first, second = stack.blocks
    assert isinstance(first.norm, torch.nn.Identity) and not first.residual
    assert isinstance(second.norm, torch.nn.LayerNorm) and second.residual
    x = torch.rand(5, B, 1)
    assert not torch.allclose(stack(x)[0], stack(2 * x)[0])


@pytest.mark.usefixtures("float64")
def test_windows_equal_the_whole_scan_and_memory_refusal_names_the_window(monkeypatch):
    cell = make("minlstm")
    x = torch.randn(23, B, IN, requires_grad=True)
    state = random_state(cell)
    whole, whole_state = cell.sequence(x, state)
    (grad_whole,) = torch.autograd.grad(whole.sum() + whole_state[0].sum(), x)
    cell.set_loop_options(scan="parallel", scan_chunk=5)  # 4 windows of 5 and one of 3
    out, final = cell.sequence(x, state)
    (grad,) = torch.autograd.grad(out.sum() + final[0].sum(), x)
    torch.testing.assert_close(out, whole)
    torch.testing.assert_close(final[0], whole_state[0])
    torch.testing.assert_close(grad, grad_whole)
    # the automatic windows of the CPU (here of 6 steps) give the same too
    cell.set_loop_options(scan="parallel")
    monkeypatch.setattr(scan_cell, "MIN_WINDOW", 1)
    monkeypatch.setattr(scan_cell, "WINDOW_BYTES", 6 * B * H * x.element_size())
    assert cell.auto_window(x) == 6
    out, final = cell.sequence(x, state)
    (grad,) = torch.autograd.grad(out.sum() + final[0].sum(), x)
    torch.testing.assert_close(out, whole)
    torch.testing.assert_close(grad, grad_whole)
    # a scan that would not fit says which window to use instead of dying
    cell.set_loop_options(scan="parallel")
    monkeypatch.setattr(scan_cell, "CHECK_ABOVE_BYTES", 0)
    per_step = B * cell.scan_floats() * x.element_size()
    monkeypatch.setattr(scan_cell, "free_memory", lambda device: 16 * per_step)  # 23 needed
    with pytest.raises(ConfigError, match=r"cell.scan_chunk=4 \(the scan then runs 4 steps"):
        cell.sequence(x, state)
    cell.set_loop_options(scan="parallel", scan_chunk=4)
    torch.testing.assert_close(cell.sequence(x, state)[0], whole)  # and that window fits


def test_scan_options_from_config_and_what_other_cells_refuse():
    from conftest import compose, fused_cell

    from rnnlab.cells.gru import GRUCell
    from rnnlab.compose import compose as build

    parts = build(compose(["cell=lru", "cell.scan=sequential", "cell.num_layers=2", "device=cpu"]))
    stack = parts.task.build_model(stack=parts.stack).rnn
    assert stack.path == "stepwise" and {layer.scan for layer in stack.layers} == {"sequential"}
    assert stack.blocks is not None and stack.final_norm is not None  # lru.yaml's block
    gru = fused_cell(GRUCell)(input_size=IN, hidden_size=H)
    for options, words in [
        ({"scan": "parallel"}, "GRUCell has none"),
        ({"scan_chunk": 64}, "cell.scan_chunk=64 sets the path"),
        ({"scan": "fast"}, "cell.scan must be one of auto, parallel, sequential"),
    ]:
        with pytest.raises(ValueError, match=words):
            gru.set_loop_options(**options)
    with pytest.raises(ValueError, match="use cell.scan=sequential"):
        make("mingru").set_loop_options(scan="parallel", zoneout=0.1)
    with pytest.raises(ValueError, match="zoneout does not apply"):
        make("lru").set_loop_options(zoneout=0.1)
    with pytest.raises(ValueError, match="cell.ffn must be one of none, mlp, glu"):
        stack_spec(CELLS["mingru"], (H,), ffn="wide")
    with pytest.raises(ValueError, match="r_min < r_max"):
        LRUCell(input_size=IN, hidden_size=H, r_min=0.9, r_max=0.9, max_phase=1.0)


# -- the tasks -------------------------------------------------------------------------------


def cells_but(fast: str) -> list:
    """The cell names, all but ``fast`` marked slow."""
    return [n if n == fast else pytest.param(n, marks=pytest.mark.slow) for n in CELLS]


@pytest.mark.parametrize("name", cells_but("minlstm"))
def test_language_model_threads_the_tbptt_carry_through_the_parallel_scan(name):
    """A window's final state carries into the next (detached): two windows in a row give
    the outputs of one window twice as long."""
    from conftest import compose

    from rnnlab.compose import compose as build
    from rnnlab.data.vocab import Vocab

    parts = build(compose(["task=ptb", f"cell={name}", "cell.hidden_size=8", "device=cpu"]))
    task = parts.task
    task.load_state_dict({"vocab": Vocab(["<unk>", "<eos>", *"abcdefgh"]).state_dict()})
    model = task.build_model(stack=parts.stack).eval()
    assert model.rnn.path == "parallel"
    ids = torch.randint(0, 10, (10, task.batch_size))  # (t, B)
    with torch.no_grad():
        whole, _ = model(ids)
        first, carry = model(ids[:4])
        second, _ = model(ids[4:], carry)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=1e-5, atol=1e-5)
    model.train()
    carry = task.init_carry(model)
    for _ in range(2):
        loss, carry, weight = task.train_loss(model, (ids, ids), carry)
        loss.backward()
    assert math.isfinite(loss.item()) and model.embedding.weight.grad is not None


@pytest.mark.parametrize("name", cells_but("lru"))
def test_beam_search_through_the_sequential_step(name):
    from test_translate import BOS, EOS, PAD

    from rnnlab.data.buckets import pad
    from rnnlab.models.beam import beam_decode, greedy_decode
    from rnnlab.models.seq2seq import Seq2Seq

    torch.manual_seed(1)
    spec = stack_spec(CELLS[name], (8,), **BLOCK)
    model = Seq2Seq(
        stack=spec,
        src_vocab_size=12,
        tgt_vocab_size=12,
        pad_index=PAD,
        embed_dim=8,
        attention="general",
        dropout=0.0,
        tie_embeddings=False,
    ).eval()
    assert model.encoder.path == "parallel" and model.encoder.num_directions == 2
    src, lengths = pad([[4, 5, 6, 7, 8], [9, 4], [5, 6, 11]], pad_index=PAD)
    kwargs = {"bos_index": BOS, "eos_index": EOS, "max_len": 10}
    greedy, _ = greedy_decode(model, src, lengths, **kwargs)
    assert beam_decode(model, src, lengths, beam_size=1, **kwargs) == greedy
    batched = beam_decode(model, src, lengths, beam_size=3, **kwargs)
    alone = [
        beam_decode(model, src[: int(n), b : b + 1], lengths[b : b + 1], beam_size=3, **kwargs)[0]
        for b, n in enumerate(lengths)
    ]
    assert batched == alone


def test_bench_counts_the_matmul_work_that_bounds_each_cells_ratio():
    """The bench's MFLOP/token: 2 layers at I = H = 200, input without a gradient. minLSTM's
    matmuls are 3H x I per layer forward, again for ∂W, and ∂x for layer 2 only: 2 (flops per
    multiply-add) x 3 x 200 x 200 x 5 = 1.2 M per token; minGRU's 2H rows give 0.8 M; the
    LSTM's 4H rows over input and state give 3.5 M (less the first step's recurrence), so
    minLSTM's matmuls alone would make it 2.92x the LSTM, not more."""
    from rnnlab.benchmarks.cells import cells_available, mflop_per_token

    table, cpu = cells_available(), torch.device("cpu")
    counts = {
        name: mflop_per_token(table[name], path, cpu)
        for name, path in (("lstm", "fused"), ("minlstm", "parallel"), ("mingru", "parallel"))
    }
    assert counts["minlstm"] == pytest.approx(1.2) and counts["mingru"] == pytest.approx(0.8)
    assert 3.45 < counts["lstm"] < 3.52
    assert counts["lstm"] / counts["minlstm"] < 3


def test_bench_cells_times_the_parallel_scan_against_lstm_per_length(workdir):
    from conftest import cli_inprocess

    done = cli_inprocess(
        "bench", "cells", "--length", "6,9", "--cells", "lru", "--quick", cwd=workdir
    )
    assert done.returncode == 0, done.stderr
    assert "KiB/token" in done.stdout and "peak MiB" in done.stdout
    assert "MFLOP/token" in done.stdout
    ratios = [line for line in done.stdout.splitlines() if line.startswith("RATIO ")]
    assert [r.split("=")[0] for r in ratios] == ["RATIO lru_vs_lstm_T6", "RATIO lru_vs_lstm_T9"]
    assert all(float(r.split("=")[1]) > 0 for r in ratios)
    bad = cli_inprocess("bench", "cells", "--length", "64,x", cwd=workdir)
    assert bad.returncode == 2 and "positive integers" in bad.stderr
