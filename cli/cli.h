/* cli/cli.h - forkctl's internal interface between its command groups. */
#ifndef FORKVM_CLI_H
#define FORKVM_CLI_H

/* Runs an agent command (eval, info, load, call, ping, wait-ready) against
 * the agent socket at agent_path. argv[0] is the command name.
 * Prints the result on stdout; returns the process exit status. */
int cli_agent_main(const char *agent_path, int argc, char **argv);

/* Runs a store command (put, export, ls, show, tag, rm, gc, verify, du,
 * init) on the store at root (NULL: the default). argv[0] is the command
 * name. Returns the process exit status. */
int cli_store_main(const char *root, int argc, char **argv);

#endif
