//! What the deployment-file tests share: reading a file of the repository, and parsing
//! a set of environment variables with a binary's own clap definition.

use std::collections::BTreeMap;

/// A file of the repository, by its path from the workspace root.
pub fn repo_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Turns a service's environment into the binary's command line and parses it with the
/// binary's own clap definition, so unknown variables and bad values both fail.
pub fn parse_with<C: clap::Parser>(env: &BTreeMap<String, String>) -> C {
    let command = C::command();
    let mut args = vec![command.get_name().to_owned()];
    for (key, value) in env {
        if key == "RUST_LOG" {
            continue;
        }
        if key == mq::REBALANCE_INTERVAL_ENV {
            // Read by the RocketMQ client itself; the service only checks it.
            mq::parse_rebalance_interval(value)
                .unwrap_or_else(|e| panic!("{}: {e}", command.get_name()));
            continue;
        }
        let arg = command
            .get_arguments()
            .find(|a| a.get_env().and_then(|e| e.to_str()) == Some(key.as_str()))
            .unwrap_or_else(|| panic!("{} does not read {key}", command.get_name()));
        let long = arg.get_long().expect("every config field has a --flag");
        args.push(format!("--{long}={value}"));
    }
    C::try_parse_from(args)
        .unwrap_or_else(|e| panic!("{} rejects its environment: {e}", command.get_name()))
}

/// `endpoint` is `http://{host}:{port}`: a client setting pointing at a server's name and
/// the port the server's own setting binds.
pub fn assert_points_at(endpoint: &str, host: &str, port: u16) {
    assert_eq!(
        endpoint,
        format!("http://{host}:{port}"),
        "an endpoint setting"
    );
}
