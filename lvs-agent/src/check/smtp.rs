//! SMTP_CHECK: banner 220, `HELO name`, 250, `QUIT` (keepalived's `check_smtp.c` dialogue).

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::target::{Failed, Failure, Target};

/// keepalived's default `helo_name` when neither the checker nor global_defs give one.
pub const DEFAULT_HELO: &str = "smtpchecker.keepalived.org";

pub async fn check(t: &Target, helo: &str) -> Result<(), Failed> {
    t.within("SMTP_CHECK", async {
        let stream = t.connect_tcp().await?;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        expect(&mut r, 220, "banner").await?;
        w.write_all(format!("HELO {helo}\r\n").as_bytes()).await.map_err(|e| Failed::io("sending HELO", &e))?;
        expect(&mut r, 250, "HELO").await?;
        // The answer to QUIT does not matter: the server already proved itself.
        let _ = w.write_all(b"QUIT\r\n").await;
        Ok(())
    })
    .await
}

/// Reads one reply (continuation lines `250-…` up to the last `250 …`) and checks its code.
async fn expect<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, code: u16, after: &str) -> Result<(), Failed> {
    // Bounded: a server sending endless continuation lines fails by the deadline or here.
    for _ in 0..64 {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.map_err(|e| Failed::io(&format!("reading the {after} reply"), &e))?;
        if n == 0 {
            return Err(Failed::new(Failure::Protocol, format!("connection closed before the {after} reply")));
        }
        let got: Option<u16> = line.get(..3).and_then(|c| c.parse().ok());
        if got != Some(code) {
            return Err(Failed::new(Failure::Status, format!("{after}: expected {code}, got `{}`", line.trim_end())));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(());
        }
    }
    Err(Failed::new(Failure::Protocol, format!("{after}: too many continuation lines")))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{io::AsyncReadExt as _, net::TcpListener, time::Instant};

    use super::*;

    async fn server(
        banner: &'static [u8],
        helo_reply: &'static [u8],
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(banner).await.unwrap();
            let mut buf = vec![0; 256];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(helo_reply).await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut rest)).await;
            String::from_utf8_lossy(&buf[..n]).into_owned() + &String::from_utf8_lossy(&rest)
        });
        (addr, task)
    }

    fn target(addr: std::net::SocketAddr) -> Target {
        Target {
            addr,
            bind: None,
            device: None,
            connect_timeout: Duration::from_secs(1),
            deadline: Instant::now() + Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn the_dialogue_of_a_good_server() {
        let (addr, task) = server(b"220-mx.example ESMTP\r\n220 ready\r\n", b"250 hello\r\n").await;
        check(&target(addr), "lb1").await.unwrap();
        assert_eq!(task.await.unwrap(), "HELO lb1\r\nQUIT\r\n");
    }

    #[tokio::test]
    async fn a_wrong_banner_or_helo_reply_is_down() {
        let (addr, _t) = server(b"554 go away\r\n", b"").await;
        assert_eq!(check(&target(addr), "x").await.unwrap_err().reason, Failure::Status);
        let (addr, _t) = server(b"220 ok\r\n", b"500 what\r\n").await;
        assert_eq!(check(&target(addr), "x").await.unwrap_err().reason, Failure::Status);
    }
}
