//! The proxy side of in-pod capture: a ZDS client that receives each enrolled pod's network
//! namespace and runs that pod's listeners inside it; `Del` (or a pod missing from the
//! snapshot after a reconnect) stops them.
