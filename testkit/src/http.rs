//! HTTP helpers for tests of the stages' endpoints.

use std::time::Duration;

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http client")
}

/// GET `url`: the status and the body as JSON (`Null` when it is not JSON).
pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let r = client().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Asserts that GET `url` answers `status` with an error naming `field`.
pub async fn assert_refused(url: &str, status: u16, field: &str) {
    let (got, body) = get_json(url).await;
    assert_eq!(got, status, "GET {url}: {body}");
    assert_eq!(body["error"]["field"], field, "GET {url}: {body}");
}

/// The text of `base`/metrics.
pub async fn metrics(base: &str) -> String {
    let url = format!("{base}/metrics");
    client()
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// The value of the series `name` (a metric without labels, or `name{…}` written out as
/// the exposition writes it) in a Prometheus text exposition; `None` when absent.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Asserts that every needle is in `base`/metrics; returns the text.
pub async fn assert_metrics(base: &str, needles: &[&str]) -> String {
    let text = metrics(base).await;
    for needle in needles {
        assert!(text.contains(needle), "{needle} missing from {base}/metrics");
    }
    text
}

/// GET `path` on a loopback port without a runtime: (status line, body), `None` when
/// nothing answers.
pub fn get_blocking(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::sample;

    #[test]
    fn a_sample_is_found_by_its_whole_series_name() {
        let text = "# TYPE a_total counter\na_total_more 9\na_total 3\n\
                    b{outcome=\"x\"} 2.5\nb{outcome=\"y\"} 1\n";
        assert_eq!(sample(text, "a_total"), Some(3.0), "not the longer name's");
        assert_eq!(sample(text, "b{outcome=\"y\"}"), Some(1.0));
        assert_eq!(sample(text, "b"), None, "a labelled series needs its labels");
        assert_eq!(sample(text, "c"), None);
    }
}
