//! The node agent side of shoal.
//!
//! [`session`] speaks the agent API: register, heartbeat, follow the node's
//! assignments, report task status (batched). What happens to a task is an
//! [`Executor`]'s business: [`sim::SimExecutor`] pretends, like Kubernetes' hollow
//! nodes, so hundreds of nodes fit on one small machine; [`container::RuncExecutor`]
//! runs real containers. [`node_api`] serves their logs and [`exec`] to the API server.

pub mod container;
pub mod dns;
pub mod exec;
pub mod image;
pub mod node_api;
pub mod pipelines;
pub mod session;
pub mod sim;

pub use session::{run_node, Executor, NodeConfig, Reporter};
