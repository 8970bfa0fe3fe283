"""The prediction log: every answer's id, inputs, outputs, version and latency, and the
ground truth fed back for them; the live evidence a rollout is judged on."""
