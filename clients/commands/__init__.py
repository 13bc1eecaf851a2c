"""The commands of `mmq` (see `mmq.clients.cli`), one module per group: jobs (submit and read),
the catalogue, the local stack and the machine, the servers, and what operators read and manage.
Each module's `add_*` functions add its commands to the parser, with the options they share
(`common.SharedOptions`), and name the handler that runs each."""
