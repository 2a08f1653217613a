"""One set of tracking defaults: the library, the Nipype interface and the app's configuration agree."""

from __future__ import annotations

import inspect

from bsym_cli.cli.config import WorkflowConfig
from bsym_cli.commands.bench.tractography import run_tractography_bench
from pipelines.defaults import DEFAULT_SEED, DEFAULT_STREAMLINES
from pipelines.dmri.interfaces import Track
from pipelines.dmri.track import TrackingParameters
from pipelines.dmri.workflow import init_dmri_wf


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()}


def test_library_defaults_are_the_shared_constants():
    params = _defaults(TrackingParameters)
    assert (params["n_streamlines"], params["seed"]) == (DEFAULT_STREAMLINES, DEFAULT_SEED)
    workflow = _defaults(init_dmri_wf)
    assert (workflow["n_streamlines"], workflow["seed"]) == (DEFAULT_STREAMLINES, DEFAULT_SEED)
    assert _defaults(run_tractography_bench)["seed"] == DEFAULT_SEED


def test_track_interface_defaults_are_the_shared_constants():
    traits = Track.input_spec().traits()
    assert traits["n_streamlines"].default == DEFAULT_STREAMLINES
    assert traits["seed"].default == DEFAULT_SEED
    inputs = Track().inputs
    assert (inputs.n_streamlines, inputs.seed) == (DEFAULT_STREAMLINES, DEFAULT_SEED)


def test_app_configuration_defaults_are_the_shared_constants():
    fields = WorkflowConfig.model_fields
    assert fields["streamlines"].default == DEFAULT_STREAMLINES
    assert fields["seed"].default == DEFAULT_SEED
    config = WorkflowConfig()
    assert (config.streamlines, config.seed) == (DEFAULT_STREAMLINES, DEFAULT_SEED)
