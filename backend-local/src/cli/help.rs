//! Every command, argument and flag of `vultrino` says what it is for: `--help` is where a user
//! looks first (issue 16).

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::super::Cli;

    /// Walk the clap tree: every subcommand has an about text, every argument (positional or
    /// flag) a help text; the generated `--help`/`--version` are clap's own.
    fn missing(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let has = arg
                .get_help()
                .or(arg.get_long_help())
                .is_some_and(|h| !h.to_string().trim().is_empty());
            if !has {
                out.push(format!("{path} <{id}>"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_name() == "help" {
                continue;
            }
            let has = sub
                .get_about()
                .or(sub.get_long_about())
                .is_some_and(|h| !h.to_string().trim().is_empty());
            if !has {
                out.push(name.clone());
            }
            missing(sub, &name, out);
        }
    }

    #[test]
    fn every_command_argument_and_flag_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        let mut out = Vec::new();
        missing(&cmd, "vultrino", &mut out);
        assert!(out.is_empty(), "no help text: {out:#?}");
    }

    /// Commands whose arguments describe one action: none may read the environment (decision
    /// 0111); the server (`--server`) is where the action goes, not what it does.
    const ACTION_COMMANDS: [&str; 7] = [
        "credential",
        "key",
        "role",
        "token",
        "approval",
        "request",
        "audit",
    ];

    fn twins(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String, String)>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.push((
                    path.to_string(),
                    arg.get_id().to_string(),
                    env.to_string_lossy().into_owned(),
                ));
            }
        }
        for sub in cmd.get_subcommands() {
            twins(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn environment_twins_are_deployment_settings_and_documented() {
        let doc = include_str!("../../../docs/environment.md");
        let mut all = Vec::new();
        twins(&Cli::command(), "vultrino", &mut all);
        assert!(all.len() > 30, "the walk found the twins: {all:?}");
        for (path, id, env) in &all {
            assert!(
                doc.contains(&format!("| `{env}` |")),
                "{path} --{id}: {env} is not listed in docs/environment.md"
            );
            let top = path.split(' ').nth(1).unwrap_or_default();
            if ACTION_COMMANDS.contains(&top) {
                assert!(
                    id == "server" || id == "allow_loopback_upstreams",
                    "{path} --{id} reads {env}: an action's argument has no environment twin"
                );
            }
        }
    }

    /// A global flag that a command does not use is not offered in its help (decision 0111).
    #[test]
    fn flags_that_do_not_apply_are_not_offered() {
        let mut cmd = super::super::command();
        cmd.build();
        for (name, ids) in super::super::NOT_FOR {
            let sub = cmd.find_subcommand_mut(name).expect("test setup");
            let help = sub.render_long_help().to_string();
            for id in ids {
                let flag = format!("--{} ", id.replace('_', "-"));
                assert!(
                    !help.contains(&flag),
                    "`vultrino {name} --help` offers {flag}"
                );
            }
        }
        let serve = cmd.find_subcommand_mut("serve").expect("test setup");
        assert!(serve.render_long_help().to_string().contains("--store "));
    }
}
