/* cli/cli.h - forkctl's internal interface between its command groups. */
#ifndef FORKVM_CLI_H
#define FORKVM_CLI_H

#include <stdbool.h>
#include <stdio.h>

/* Runs an agent command (eval, info, load, call, ping, wait-ready) against
 * the agent socket at agent_path. argv[0] is the command name.
 * Prints the result on stdout; returns the process exit status. */
int cli_agent_main(const char *agent_path, int argc, char **argv);

/* Runs a store command (put, export, ls, show, tag, rm, gc, verify, du,
 * init) on the store at root (NULL: the default). argv[0] is the command
 * name. Returns the process exit status. */
int cli_store_main(const char *root, int argc, char **argv);

/* True if name is a fork daemon command (template, fork, invoke, clones,
 * clone, kill, eval, console, metrics; ping only when forkd_given, since
 * without --forkd it is the VMM's). */
bool cli_forkd_is_command(const char *name, bool forkd_given);

/* Runs a fork daemon command (docs/forkd-api.md) against forkd's API socket
 * (NULL: the default, forkd_socket_default()). timeout_ms is the global
 * --timeout (-1: forever) when timeout_given, else ignored. argv[0] is the
 * command name. Prints results on stdout; returns the process exit status. */
int cli_forkd_main(const char *socket, int timeout_ms, bool timeout_given, int argc, char **argv);

/* Prints the fork daemon commands' lines of the usage text to f. */
void cli_forkd_usage(FILE *f);
/* The agent and store commands' usage texts. */
void cli_agent_usage(FILE *f);
void cli_store_usage(FILE *f);

#endif
