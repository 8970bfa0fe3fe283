"""Confined model jobs: every load of a model someone else made runs in a sandboxed process.

A pushed or added model is code as much as data (Keras' safe_mode has had bypasses), so the
jobs that load one (check, legacy conversion, scoring) run as another uid with an empty
environment, no network, no view of the serving account's files, and memory, CPU and time
limits. `policy` decides how (pure), `confine` builds the sandbox (root, inside new
namespaces), `jobs` is the code that runs inside, `runner` is the caller's side, and
`confined` offers the three jobs as typed functions. Inputs travel as a bounded tar on stdin,
outputs as a bounded tar on stdout: the privileged side never opens a path the caller names.
"""
