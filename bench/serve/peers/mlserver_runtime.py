"""MLServer peer: a custom runtime scoring the same model, adaptive batching on.

MLServer speaks the V2 (Open Inference) protocol: POST /v2/models/classifier/infer with
{"inputs": [{"name": "rows", "shape": [1, 8], "datatype": "FP32", "data": [...]}]}, answered
with {"outputs": [{"name": "probabilities", "shape": [1, 1], ...}]}. Adaptive batching
(max_batch_size / max_batch_time in model-settings.json) concatenates concurrent requests
along the first dimension before predict() sees them. bench/serve/run.py writes settings.json
and model-settings.json (parameters.uri = the model's plan.npz, see dense.py) and runs
`mlserver start` in its own venv.
"""

from __future__ import annotations

import dense
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class DenseRuntime(MLModel):
    """Score (n, 8) FP32 rows into (n, 1) probabilities."""

    async def load(self) -> bool:
        """Read the weights named by parameters.uri."""
        self._score = dense.load(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Score one (possibly batched) request."""
        rows = NumpyCodec.decode_input(payload.inputs[0])
        outputs = [NumpyCodec.encode_output("probabilities", self._score(rows))]
        return InferenceResponse(model_name=self.name, outputs=outputs)
