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
}
