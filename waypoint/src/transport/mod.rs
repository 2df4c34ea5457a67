//! Bytes in and out: the HBONE server, protocol detection, HTTP serving, HBONE clients to
//! endpoints, and the controller's config.
