"""The probes: one module each, a `bsstudy.train.probe.Probe` (a Lightning callback) with one config file
bsstudy/conf/probes/<name>.yaml. The engine knows none of them by name: Hydra instantiates the `_target_` of each
selected one (docs/architecture.md#adding-a-probe)."""
