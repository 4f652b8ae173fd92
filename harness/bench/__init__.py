"""`make bench`: how faithful, how heavy and how scalable the harness's measurements are.

Steps, each a module with one job:
  vendor    the agent's median latency next to OpenVINO's benchmark_app and LiteRT's litert-benchmark
  overhead  a full profile's wall time against the agent's own time; warm rerun against cold
  scaling   a nightly run over 1, 3 and 6 simulated devices
  memory    the host controller's peak RSS (through harness.bench.controller)
`python -m harness.bench` runs them and writes reports/bench/bench.json and bench.md.
"""
