//! Keeps credentials out of logs and errors: every URL sdl prints passes through [`redact_url`].

/// Replaces the password in `scheme://user:password@host...` with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}://{}:***@{}", &url[..scheme_end], user, &rest[at + 1..])
        }
        None => url.to_string(),
    }
}

/// Redacts any URL-looking word in an error message.
pub fn redact_error(message: &str) -> String {
    message
        .split(' ')
        .map(|word| {
            if word.contains("://") {
                redact_url(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden() {
        assert_eq!(
            redact_url("mysql://repl:s3cret@db:3306/x"),
            "mysql://repl:***@db:3306/x"
        );
        assert_eq!(redact_url("mongodb://h:1/?rs=a"), "mongodb://h:1/?rs=a");
        assert!(!redact_error("bad url mysql://a:pw@h").contains("pw"));
    }
}
