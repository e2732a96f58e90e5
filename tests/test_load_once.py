"""Load once, analyse many times: `vrprobe.load` returns an adapter that every API function takes in place of a spec,
with the same records and the same manifest as the spec form (so a run resumes across the two forms); the loading
options come as one `options=LoadOptions(...)`, the six old keywords still work with a `DeprecationWarning`."""

from __future__ import annotations

import json
import math
import warnings

import pytest

import vrprobe
from vrprobe import LoadOptions, UsageError
from vrprobe.analyses import knockout as knockout_module
from vrprobe.analyses import proxies
from vrprobe.registry import model_ref

DATA = "easy-vqa:test"
#: each call small: (function, its arguments after the model)
CALLS = {
    "eval": (vrprobe.eval, {"limit": 24, "make_report": False}),
    "trace": (vrprobe.trace, {"limit": 2, "noise_samples": 2, "kinds": ("resid",), "make_report": False}),
    "knockout": (vrprobe.knockout, {"limit": 4, "edges": "image->last,last->last", "n_boot": 50}),
}
TABLE = {"eval": "records", "trace": "traces", "knockout": "windows"}


@pytest.fixture(scope="module")
def loaded():
    return vrprobe.load("zoo:llava")


def rows(result, name):
    return {"eval": lambda: result.records, "trace": lambda: result.rows, "knockout": lambda: result.windows}[name]()


def same(a, b) -> bool:
    """Equal, NaN equal to NaN (study records hold NaN where a signal is undefined)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def parts(out, table):
    return sorted(p.name for p in (out / table).glob("part-*.parquet"))


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("name", list(CALLS))
def test_a_loaded_model_gives_the_spec_forms_records_and_manifest_and_resumes_across_forms(loaded, name, tmp_path):
    function, kwargs = CALLS[name]
    by_spec = function("zoo:llava", DATA, out=tmp_path / "spec", **kwargs)
    by_adapter = function(loaded, DATA, out=tmp_path / "adapter", **kwargs)
    assert rows(by_adapter, name) == rows(by_spec, name) and rows(by_spec, name)  # exactly: same kernels, shapes
    assert by_adapter.summary == by_spec.summary
    assert manifest(tmp_path / "adapter") == manifest(tmp_path / "spec")
    assert manifest(tmp_path / "spec")["config"]["model"] == "zoo:llava"
    for out, model in ((tmp_path / "spec", loaded), (tmp_path / "adapter", "zoo:llava")):  # resume in the other form
        before = parts(out, TABLE[name])
        again = function(model, DATA, out=out, **kwargs)
        assert parts(out, TABLE[name]) == before and rows(again, name) == rows(by_spec, name)


def test_a_study_takes_loaded_models_and_specs_alike(loaded, tmp_path):
    kwargs = {"limit": 8, "trace_limit": 2, "probe_limit": 40, "make_report": False}
    by_spec = vrprobe.study("zoo:llava", DATA, out=tmp_path / "spec", **kwargs)
    by_adapter = vrprobe.study([loaded], DATA, out=tmp_path / "adapter", **kwargs)
    assert same(by_adapter.records, by_spec.records) and same(by_adapter.table, by_spec.table)
    assert manifest(tmp_path / "adapter") == manifest(tmp_path / "spec")


def test_knockout_attribute_probe_are_reachable_from_the_package_root():
    assert vrprobe.knockout is knockout_module.knockout and vrprobe.api.knockout is vrprobe.knockout
    assert vrprobe.attribute is proxies.attribute and vrprobe.probe is proxies.probe
    assert vrprobe.LoadOptions is LoadOptions and callable(vrprobe.load)


def test_the_old_keywords_still_work_and_warn(tmp_path):
    with pytest.warns(DeprecationWarning, match=r"vrprobe\.eval\(device='cpu'\) is deprecated: pass options=Load"):
        vrprobe.eval("zoo:llava", DATA, limit=2, device="cpu", out=tmp_path / "old", make_report=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the options form warns about nothing
        vrprobe.eval(
            "zoo:llava", DATA, limit=2, options=LoadOptions(device="cpu"), out=tmp_path / "new", make_report=False
        )
    assert manifest(tmp_path / "old")["config"] == manifest(tmp_path / "new")["config"]
    assert manifest(tmp_path / "new")["config"]["device"] == "cpu"


def test_a_loaded_model_with_other_options_is_one_usage_error(loaded, tmp_path):
    other = LoadOptions(dtype="bfloat16")
    for call in (
        lambda: vrprobe.trace(loaded, DATA, limit=1, options=other, out=tmp_path / "x"),
        lambda: vrprobe.knockout(loaded, DATA, limit=1, options=other, out=tmp_path / "x"),
        lambda: vrprobe.study([loaded], DATA, limit=1, options=other, out=tmp_path / "x"),
        lambda: vrprobe.eval(loaded, DATA, limit=1, dtype="bfloat16", out=tmp_path / "x"),
    ):
        with warnings.catch_warnings(), pytest.raises(UsageError, match="zoo:llava is already loaded"):
            warnings.simplefilter("ignore", DeprecationWarning)
            call()
    assert not (tmp_path / "x").exists()
    assert model_ref(loaded, LoadOptions()) == ("zoo:llava", loaded.load_options)  # the defaults, or its own: fine
    assert model_ref(loaded, loaded.load_options) == ("zoo:llava", loaded.load_options)


def test_an_unknown_keyword_or_both_forms_is_one_clear_error(loaded, tmp_path):
    calls = {
        "eval": lambda **kw: vrprobe.eval(loaded, DATA, **kw),
        "trace": lambda **kw: vrprobe.trace(loaded, DATA, **kw),
        "corrupt": lambda **kw: vrprobe.corrupt(loaded, DATA, "1-2", **kw),
        "knockout": lambda **kw: vrprobe.knockout(loaded, DATA, **kw),
        "attribute": lambda **kw: vrprobe.attribute(loaded, DATA, **kw),
        "probe": lambda **kw: vrprobe.probe(loaded, "easy-vqa:train", DATA, **kw),
        "study": lambda **kw: vrprobe.study([loaded], DATA, **kw),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^vrprobe\.{name}\(\) got an unexpected keyword argument 'limt'$") as e:
            call(limt=2, out=tmp_path / "x")
        assert isinstance(e.value, UsageError)  # one line on the command line too
    with pytest.raises(UsageError, match=r"did you mean options=LoadOptions\(dtype=\.\.\.\)"):
        vrprobe.eval("zoo:llava", DATA, dtypes="float32")
    with pytest.raises(UsageError, match="pass the loading options once"):
        vrprobe.eval("zoo:llava", DATA, options=LoadOptions(), device="cpu")
    with pytest.raises(UsageError, match="takes a vrprobe.LoadOptions"):
        vrprobe.eval("zoo:llava", DATA, options={"device": "cpu"})
    assert not (tmp_path / "x").exists()
