"""The plan is the program: the executor runs exactly the pruned plan, Capture.layers and
Gradient.wrt drive the passes, skipping cached work is a pass over the plan, and `interpgram plan`
says which ops a cache spares."""
from __future__ import annotations

import textwrap
from dataclasses import replace

import pytest
import torch

from interpgram.grammar.plan import Capture, Gradient, Present, Reduce, Series
from interpgram.backends.cli import main
from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.execute.executor import Executor, run_plan
from interpgram.backends.execute.prune import PlanError
from interpgram.backends.kernels import network
from interpgram.backends.pipeline import load_spec_inputs, prepare, run

A = "a: {content: {attribution: {from: {layer: conv3}, to: {layer: output, select: [star]}}}, presentation: heatmap}"
B = "b: {content: {attribution: {from: {layer: conv4}, to: {layer: output, select: [ring]}}}, presentation: heatmap}"
M = "m: {content: {activation: {layer: conv2}}, presentation: heatmap}"


def write_spec(tmp_path, elements: str, name="s.yaml", inputs="[builtin:shapes/3, builtin:shapes/4]"):
    text = f"interpgram: 1\nmodel: builtin:shapes-cnn\ninput: {inputs}\nelements:\n" + textwrap.indent(
        textwrap.dedent(elements).strip("\n"), "  ") + "\n"
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def captured(monkeypatch):
    """The layers each forward pass of the network kernel recorded (the real run_capture, observed)."""
    calls: list[tuple[str, ...]] = []
    real = network.run_capture

    def observed(module, x, layers, *, grad):
        calls.append(tuple(layers))
        return real(module, x, layers, grad=grad)

    monkeypatch.setattr(network, "run_capture", observed)
    return calls


def executor(prep, cache):
    return Executor(prep.plan, prep.model, load_spec_inputs(prep), cache=cache)


def test_a_warm_cache_prunes_the_capture_and_runs_no_pass(tmp_path, captured):
    prep = prepare(write_spec(tmp_path, "\n".join([A, B, M])))
    cache = ResultCache(tmp_path / "cache")
    cold, cached = executor(prep, cache).prune()
    assert cached == {}
    (cap,) = cold.of_type(Capture)
    assert cap.layers == ("conv2", "conv3", "conv4") and cap.needs_grad
    assert not cold.of_type(Present)  # the plan to run holds work only
    _, res = run(prep, cache=cache)
    assert captured == [("conv2", "conv3", "conv4")]
    assert (res.stats.forward_passes, res.stats.backward_passes) == (1, 2)

    captured.clear()
    warm, cached = executor(prep, cache).prune()
    assert warm.ops == {} and set(cached) == {s.op for p in prep.plan.elements for s in p.series}
    _, again = run(prep, cache=cache)
    assert captured == [] and (again.stats.forward_passes, again.stats.backward_passes) == (0, 0)
    assert again.stats.cache == {"Reduce": (3, 0)}  # the policy's counters, per kind
    for op_id in cached:
        torch.testing.assert_close(again.values[op_id]["value"], res.values[op_id]["value"])
    assert prep.plan.of_type(Capture)[0].layers == ("conv2", "conv3", "conv4")  # the compiled plan is unchanged


def test_a_partial_cache_narrows_capture_layers_and_gradient_wrt(tmp_path, captured):
    cache = ResultCache(tmp_path / "cache")
    run(prepare(write_spec(tmp_path, A, name="a.yaml")), cache=cache)
    both = prepare(write_spec(tmp_path, "\n".join([A, B])))
    to_run, cached = executor(both, cache).prune()
    assert len(cached) == 1
    (cap,) = to_run.of_type(Capture)
    (g,) = to_run.of_type(Gradient)
    assert cap.layers == ("conv4",) and g.wrt == ("conv4",) and g.target.cls is not None
    assert [type(op).__name__ for op in to_run.ops.values()] == ["Capture", "Gradient", "Reduce"]
    captured.clear()
    _, res = run(both, cache=cache)
    assert captured == [("conv4",)]
    assert (res.stats.forward_passes, res.stats.backward_passes, res.stats.cache_hits) == (1, 1, 1)


def test_capture_layers_drive_what_is_captured(tmp_path, captured):
    """A plan edited to capture one more layer (and reduce it) captures it; reading a layer the
    Capture does not record is refused before anything runs."""
    prep = prepare(write_spec(tmp_path, M))
    plan = prep.plan
    cap = plan.of_type(Capture)[0]
    extra = Reduce("extra", capture=cap.id, layer="conv1", atom="channel")
    shown = Present("pe", element="e", presentation="bars", atom="channel", layer="conv1",
                    series=(Series("conv1", "extra"),))
    edited = replace(plan, ops={**plan.ops, cap.id: replace(cap, layers=("conv1",) + cap.layers),
                                "extra": extra, "pe": shown})
    inputs = load_spec_inputs(prep)
    ex = Executor(edited, prep.model, inputs, cache=ResultCache(None, enabled=False))
    res = ex.run()
    assert captured == [("conv1", "conv2")]
    module = prep.model.on("cpu", torch.float32)
    with torch.no_grad():
        want = module.conv1(prep.model.preprocess(inputs.images)).mean(dim=(2, 3))  # channel atoms: the mean
    torch.testing.assert_close(res.values["extra"]["value"], want, rtol=1e-4, atol=1e-5)

    unrecorded = replace(plan, ops={**plan.ops, "extra": extra, "pe": shown})
    with pytest.raises(PlanError, match="does not capture conv1"):
        Executor(unrecorded, prep.model, inputs, cache=ResultCache(None, enabled=False)).run()


def test_the_executor_runs_exactly_the_ops_it_is_given(tmp_path, captured):
    prep = prepare(write_spec(tmp_path, "\n".join([A, M])))
    inputs = load_spec_inputs(prep)
    ex = Executor(prep.plan, prep.model, inputs, cache=ResultCache(None, enabled=False))
    to_run, _ = ex.prune()
    only_m = next(s.op for p in prep.plan.elements if p.element == "m" for s in p.series)
    cap = to_run.of_type(Capture)[0]
    mine = replace(to_run, ops={cap.id: replace(cap, layers=("conv2",), needs_grad=False), only_m: to_run.ops[only_m]})
    values = run_plan(mine, ex.context)
    assert set(values) == {only_m} and captured == [("conv2",)]
    assert (ex.context.stats.forward_passes, ex.context.stats.backward_passes) == (1, 0)


def test_filter_computes_its_by_content(tmp_path):
    """A filter's `by` content is a dependency of the transform: computed (and cached) even when no
    element shows it."""
    spec = write_spec(tmp_path, """
    f: {content: {transform: {op: filter, of: {attribution: {from: {layer: conv3}, to: {layer: output, select: [star]}}},
                              by: {activation: {layer: conv3}}, threshold: 0.5}}, presentation: heatmap}
    """)
    prep = prepare(spec)
    _, res = run(prep, cache=ResultCache(tmp_path / "cache"))
    (p,) = prep.plan.elements
    comb = prep.plan.ops[p.series[0].op]
    by = res.values[comb.by]["value"]
    x = res.values[comb.inputs[0]]["value"]
    torch.testing.assert_close(res.values[comb.id]["value"], torch.where(by > 0.5, x, torch.zeros(())))


def test_plan_command_marks_what_the_cache_holds(tmp_path, capsys):
    spec = write_spec(tmp_path, "\n".join([A, B]))
    cache_dir = tmp_path / "cache"
    assert main(["plan", str(spec), "--cache-dir", str(cache_dir)]) == 0
    cold = capsys.readouterr().out
    assert "cache   0 op(s) cached" in cold and "1 forward, 2 backward pass(es) left" in cold
    assert "memory" in cold.splitlines()[6] and cold.count("  runs") >= 5
    run(prepare(spec), cache=ResultCache(cache_dir))
    assert main(["plan", str(spec), "--cache-dir", str(cache_dir)]) == 0
    warm = capsys.readouterr().out
    assert "cache   2 op(s) cached, 0 to run: 0 forward, 0 backward pass(es) left" in warm
    lines = warm.splitlines()
    assert all(line.rstrip().endswith("not needed") for line in lines if "Capture " in line or "Gradient " in line)
    assert sum(line.rstrip().endswith("cached") for line in lines) == 2
    assert main(["plan", str(spec)]) == 0  # no cache given: the plan alone
    plain = capsys.readouterr().out
    assert "cached" not in plain and "cache" not in plain.splitlines()[5]
