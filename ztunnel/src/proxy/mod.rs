//! The data path of one captured pod: outbound (15001), inbound plaintext (15006) and inbound
//! HBONE (15008) listeners inside the pod's network namespace.
