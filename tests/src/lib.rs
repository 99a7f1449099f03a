//! Cross-crate integration tests live under `tests/tests/`: scenarios that
//! span the facade, the store and the simulator.
