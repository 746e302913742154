//! Network namespaces and veth pairs for live tests (written by the XDP work).
