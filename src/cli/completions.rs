use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to print completions for.
    pub shell: clap_complete::Shell,
}

pub fn run(a: Args) {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "stage", &mut std::io::stdout());
}
