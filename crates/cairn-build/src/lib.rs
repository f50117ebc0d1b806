//! The build engine: plan (stages → step graph with cache keys), solve (run ready steps in
//! parallel, cache hits cost a lookup), export (store, OCI layout, docker-archive), and progress
//! events that the CLI renders.
