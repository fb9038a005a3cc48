//! Scenario, property and snapshot tests of Nefele over the simulator live in `tests/`.
