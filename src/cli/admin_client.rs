//! The client side of the admin endpoint, for `sdl wal` on a running service: plain HTTP GETs to
//! `admin.listen` with the service's token (read from its WAL directory), blocking (ureq), since a
//! command asks one thing at a time. An answer other than 2xx is an error carrying the answer, and
//! a token that could not be read says why.

use anyhow::Context;

/// A running service's admin endpoint.
pub(super) struct AdminClient {
    /// `host:port`.
    pub addr: String,
    /// The service's token (`wal_view::read_token`), or why it could not be read.
    pub token: anyhow::Result<String>,
}

impl AdminClient {
    /// GET `path` from the running service: the response, or an error with its answer (a 401
    /// says where the token is; a token that could not be read says why).
    fn call(&self, path: &str) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("http://{}{path}", self.addr);
        let mut request = ureq::get(&url).config().http_status_as_error(false).build();
        if let Ok(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().with_context(|| {
            format!(
                "the WAL is locked by a running sdl and its admin endpoint {url} did not answer"
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let mut error = anyhow::anyhow!("{url} answered {status}: {}", body.trim());
            if let Err(e) = &self.token {
                error = error.context(format!("{e:#}"));
            }
            return Err(error);
        }
        Ok(response)
    }

    /// Each line of a streamed answer, as it arrives.
    pub fn stream_lines(
        &self,
        path: &str,
        mut emit: impl FnMut(String) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use std::io::BufRead;
        let mut response = self.call(path)?;
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            emit(line.with_context(|| format!("reading {path} from the admin endpoint"))?)?;
        }
        Ok(())
    }

    /// A JSON answer.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let mut response = self.call(path)?;
        let body = response.body_mut().read_to_string()?;
        serde_json::from_str(&body)
            .with_context(|| format!("unexpected answer from http://{}{path}: {body}", self.addr))
    }
}
