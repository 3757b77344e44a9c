//! `mxgate(8)`: clap_mangen's title, name, synopsis and global options of
//! the top command, then a COMMANDS section holding every subcommand, nested
//! ones included (`mxgate cluster identifier export`), each with its
//! synopsis, description and options read from the clap definitions, then
//! the exit status, files and related pages. clap_mangen would give each
//! subcommand a page of its own; one page is what an operator reads.

use clap::{Arg, ArgAction, Command};
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

/// The roff source of `mxgate(8)` for the command line `cmd`.
pub(super) fn page(cmd: Command, version: &str) -> std::io::Result<Vec<u8>> {
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone())
        .title("MXGATE")
        .section("8")
        // An empty date must still take its place among the .TH arguments.
        .date("\"\"")
        .source(format!("mxgate {version}"))
        .manual("System Administration");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    let mut roff = Roff::new();
    description(&mut roff);
    roff.to_writer(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands() {
        command(&mut roff, sub, "mxgate");
    }
    closing_sections(&mut roff);
    roff.to_writer(&mut out)?;
    Ok(out)
}

/// DESCRIPTION: what the program is and how its commands reach the daemon.
fn description(roff: &mut Roff) {
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "mxgate is the front door of a mail-gateway cluster: an SMTP-aware load balancer \
         and injection router. It speaks SMTP to the client itself, picks a member by sticky \
         source/destination affinity that every mxgate node computes the same way, passes the \
         real client to the member's MTA (XCLIENT or PROXY), and fails over before anything \
         can be lost. It also proxies the members' GINA web portals and runs the cluster \
         control plane.",
    )]);
    roff.control("PP", []);
    roff.text([
        bold("mxgate serve"),
        roman(" runs the daemon. The other commands but "),
        bold("check-config"),
        roman(", "),
        bold("demo"),
        roman(" and "),
        bold("completions"),
        roman(" ask the running daemon through the admin socket "),
        italic("data_dir"),
        roman("/admin.sock, found through the same "),
        bold("-c"),
        roman(" file the daemon was started with."),
    ]);
}

/// One `.SS` per runnable command under `parent`: leaves, and groups that
/// take options of their own.
fn command(roff: &mut Roff, cmd: &Command, parent: &str) {
    if cmd.is_hide_set() {
        return;
    }
    let path = format!("{parent} {}", cmd.get_name());
    let args: Vec<&Arg> = cmd.get_arguments().filter(|a| shown(a)).collect();
    if !cmd.has_subcommands() || !args.is_empty() {
        roff.control("SS", [path.as_str()]);
        if !args.is_empty() {
            roff.text(synopsis(&path, &args, cmd.has_subcommands()));
            roff.control("PP", []);
        }
        if let Some(about) = cmd.get_long_about().or_else(|| cmd.get_about()) {
            roff.text([roman(sentence(&about.to_string()))]);
        }
        for arg in args {
            option(roff, arg);
        }
    }
    for sub in cmd.get_subcommands() {
        command(roff, sub, &path);
    }
}

/// Options described on the command itself: not the global `-c` (in
/// OPTIONS), nor `--help` and `--version`, which every command has.
fn shown(arg: &Arg) -> bool {
    let generic = matches!(
        arg.get_action(),
        ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
    );
    !arg.is_hide_set() && !arg.is_global_set() && !generic
}

/// `mxgate route explain --client IP [--dest IP] [--json]`.
fn synopsis(path: &str, args: &[&Arg], subcommands: bool) -> Vec<Inline> {
    let mut line = vec![bold(path)];
    for arg in args {
        let (open, close) = if arg.is_required_set() {
            ("", "")
        } else {
            ("[", "]")
        };
        line.push(roman(format!(" {open}")));
        line.extend(flag(arg));
        line.push(roman(close));
        if repeats(arg) {
            line.push(roman("..."));
        }
    }
    if subcommands {
        line.push(roman(" "));
        line.push(italic("command"));
    }
    line
}

/// `--client` `IP`, `-c` `FILE`, or a positional's `DOMAINS`.
fn flag(arg: &Arg) -> Vec<Inline> {
    let value = value_name(arg);
    if arg.is_positional() {
        return vec![italic(value)];
    }
    let mut inlines = Vec::new();
    match (arg.get_short(), arg.get_long()) {
        (Some(short), Some(long)) => inlines.push(bold(format!("-{short}, --{long}"))),
        (Some(short), None) => inlines.push(bold(format!("-{short}"))),
        (None, Some(long)) => inlines.push(bold(format!("--{long}"))),
        (None, None) => {}
    }
    if takes_value(arg) {
        inlines.push(roman(" "));
        inlines.push(italic(value));
    }
    inlines
}

/// The value's name as clap shows it in `--help`.
fn value_name(arg: &Arg) -> String {
    match arg.get_value_names() {
        Some(names) => names
            .iter()
            .map(|n| n.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        None => arg.get_id().as_str().to_uppercase(),
    }
}

/// Whether the option takes a value (a flag does not).
fn takes_value(arg: &Arg) -> bool {
    arg.get_num_args().is_some_and(|n| n.takes_values())
        && !matches!(
            arg.get_action(),
            ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count
        )
}

/// Whether the argument may be given several times or with several values.
fn repeats(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append | ArgAction::Count)
        || arg.get_num_args().is_some_and(|n| n.max_values() > 1)
}

/// `.TP` with the option, then its help, its choices and its default.
fn option(roff: &mut Roff, arg: &Arg) {
    roff.control("TP", []);
    roff.text(flag(arg));
    let mut body = Vec::new();
    if let Some(help) = arg.get_long_help().or_else(|| arg.get_help()) {
        body.push(roman(sentence(&help.to_string())));
    }
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .collect();
    if !choices.is_empty() {
        body.push(roman(format!(" One of: {}.", choices.join(", "))));
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !defaults.is_empty() && takes_value(arg) {
        body.push(roman(format!(" Default: {}.", defaults.join(", "))));
    }
    if !body.is_empty() {
        roff.text(body);
    }
}

/// `text` ending with a full stop, as the sentences after it do.
fn sentence(text: &str) -> String {
    let text = text.trim_end();
    if text.ends_with(['.', ')', ':']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// EXIT STATUS, SIGNALS, FILES and SEE ALSO.
fn closing_sections(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in [
        ("0", "done."),
        (
            "1",
            "the daemon refused the request, or the command failed.",
        ),
        ("64", "the arguments cannot be used (EX_USAGE)."),
        ("69", "the daemon cannot be reached (EX_UNAVAILABLE)."),
        ("70", "an internal error (EX_SOFTWARE)."),
        ("78", "a configuration file is wrong (EX_CONFIG)."),
    ] {
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning)]);
    }
    roff.control("PP", []);
    roff.text([
        bold("mxgate dns check"),
        roman(" ends with the codes of monitoring plugins instead: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."),
    ]);
    roff.control("SH", ["SIGNALS"]);
    for (signal, meaning) in [
        (
            "SIGTERM, SIGINT",
            "stop accepting, let sessions in flight finish within drain_timeout, then 421 4.3.2 and exit.",
        ),
        (
            "SIGHUP",
            "reload both configuration files; sessions keep the configuration they started with.",
        ),
        (
            "SIGUSR2",
            "binary upgrade, as mxgate upgrade: start the binary now installed, hand it the \
             listening sockets; once it serves, stop accepting and let every session finish \
             (up to drain_timeout, then drain as on SIGTERM) and exit.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([bold(signal)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["FILES"]);
    for (file, meaning) in [
        (
            "/etc/mxgate/mxgate.toml",
            "node-local settings, see mxgate.toml(5).",
        ),
        (
            "/etc/mxgate/cluster.toml",
            "the policy, see mxgate-cluster.toml(5).",
        ),
        (
            "/var/lib/mxgate",
            "state: cluster database, keys, LFT store, admin.sock.",
        ),
    ] {
        roff.control("TP", []);
        roff.text([italic(file)]);
        roff.text([roman(meaning)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "mxgate.toml(5), mxgate-cluster.toml(5), systemd.service(5); \
         /usr/share/doc/mxgate and the docs/ directory of the sources.",
    )]);
}
