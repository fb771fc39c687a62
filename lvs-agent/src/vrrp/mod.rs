//! VRRP (RFC 3768, RFC 5798, RFC 9568) between directors, interoperating with keepalived.

pub mod packet;
pub mod state;
