//! Root's credentials for a guest's first start (`root_key=`,
//! `root_password_hash=`): what they must look like. A private key or a
//! plain password handed over by mistake is refused here, before it could
//! reach a guest or a log.

/// A crypt(3) hash as `openssl passwd -6` or `mkpasswd -m yescrypt` print
/// it (`$id$salt$hash`, `$y$params$salt$hash`). The reason when not.
pub fn check_password_hash(hash: &str) -> Result<(), &'static str> {
    let parts: Vec<&str> = hash.split('$').collect();
    if !hash.starts_with('$')
        || parts.len() < 4
        || parts.iter().skip(1).any(|p| p.is_empty())
        || hash.contains(|c: char| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err("not a crypt(3) hash such as `openssl passwd -6` or `mkpasswd -m yescrypt` print ($id$salt$hash); give the hash, not the password");
    }
    Ok(())
}

/// The text of an OpenSSH public key file: one or more key lines, never a
/// private key. The number of keys, or the reason when not.
pub fn check_public_keys(text: &str) -> Result<usize, String> {
    if text.contains("PRIVATE KEY") {
        return Err("this is a private key, which never goes into a guest; give the public one (the .pub file)".into());
    }
    let keys: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if keys.is_empty() {
        return Err("no public key in it (an OpenSSH .pub file has a line like `ssh-ed25519 AAAA… you@host`)".into());
    }
    for key in &keys {
        let known = ["ssh-", "ecdsa-", "sk-"];
        if !key
            .split_whitespace()
            .any(|word| known.iter().any(|k| word.starts_with(k)))
        {
            let shown: String = key.chars().take(40).collect();
            return Err(format!("{shown:?} is not an OpenSSH public key line"));
        }
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_crypt_hashes_never_passwords() {
        assert!(check_password_hash("$6$salt$abcdef").is_ok());
        assert!(check_password_hash("$y$j9T$salt$abc").is_ok());
        for bad in [
            "secret", "$6$salt$", "$6$a:b$c", "$6$", "", "$6$$abc", "$6$s$a b",
        ] {
            assert!(check_password_hash(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn public_keys_are_counted_private_keys_refused() {
        assert_eq!(
            check_public_keys("ssh-ed25519 AAAAC3Nza test@host\n"),
            Ok(1)
        );
        assert_eq!(
            check_public_keys(
                "# mine\nfrom=\"10.0.2.2\" ssh-rsa AAAAB3 x\necdsa-sha2-nistp256 AAAA y\n"
            ),
            Ok(2)
        );
        let private = check_public_keys("-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap_err();
        assert!(private.contains("private key"), "{private}");
        assert!(check_public_keys("\n# nothing\n").is_err());
        assert!(check_public_keys("hello world\n").is_err());
    }
}
