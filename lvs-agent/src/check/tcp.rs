//! TCP_CHECK: the server is up when it accepts a connection in time.

use super::target::{Failed, Target};

pub async fn check(t: &Target) -> Result<(), Failed> {
    t.within("TCP_CHECK", async { t.connect_tcp().await.map(drop) }).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::check::target::Failure;

    #[tokio::test]
    async fn accepts_is_up_and_refused_is_down() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target {
            addr: l.local_addr().unwrap(),
            bind: Some("127.0.0.1:0".parse().unwrap()),
            device: None,
            connect_timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(1),
        };
        check(&t).await.unwrap();
        drop(l);
        assert_eq!(check(&t).await.unwrap_err().reason, Failure::Refused);
    }
}
