//! The HTTP API of `docs/http-api.md`, exercised in-process against the real router and a real
//! store: every endpoint, representation, parameter and error, consumer groups included
//! (projections come later).

mod append;
mod auth;
mod connections;
mod correlation;
mod groups;
mod groups_scale;
mod groups_support;
mod ops;
mod projections;
mod read;
mod server;
mod slips;
mod streams;
mod subscribe;
mod support;
