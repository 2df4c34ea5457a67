//! The chained CNI plugin's protocol with the node agent (`protocol`), shared by the plugin
//! binary (`src/main.rs`) and the agent's CNI socket (`ztunnel::agent::cni`).

pub mod protocol;
