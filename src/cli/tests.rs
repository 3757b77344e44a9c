//! The help texts: every command says what it does with an example, and
//! stands alone (no reference to documents a user does not have).

use clap::CommandFactory;

use super::Cli;

/// Every command and subcommand with its path ("mxgate cluster join").
fn every_command(command: &clap::Command, path: &str, found: &mut Vec<(String, clap::Command)>) {
    for sub in command.get_subcommands() {
        let path = format!("{path} {}", sub.get_name());
        found.push((path.clone(), sub.clone()));
        every_command(sub, &path, found);
    }
}

#[test]
fn every_subcommand_has_an_example_and_stands_alone() {
    let mut commands = Vec::new();
    every_command(&Cli::command(), "mxgate", &mut commands);
    assert!(commands.len() > 30, "found {} commands", commands.len());
    for (path, mut command) in commands {
        let help = command.render_long_help().to_string();
        assert!(!help.contains("SPEC"), "{path} refers to SPEC:\n{help}");
        if command.get_name() == "help" {
            continue;
        }
        assert!(help.contains("Example"), "{path} has no example:\n{help}");
        let about = command
            .get_about()
            .map(|a| a.to_string())
            .unwrap_or_default();
        assert!(about.len() > 20, "{path} says too little: {about:?}");
    }
}

#[test]
fn the_top_level_help_explains_the_terms() {
    let help = Cli::command().render_long_help().to_string();
    for term in ["GINA ", "LFT ", "member "] {
        assert!(
            help.contains(&format!("  {term}")),
            "no line for {term}:\n{help}"
        );
    }
    assert!(!help.contains("SPEC"), "{help}");
}
