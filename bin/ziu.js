#!/usr/bin/env node
// The CLI's logs are for when something goes wrong; results go to stdout.
process.env.ZIU_LOG_LEVEL ??= 'warn';
// A reader that went away (ziu ... | head) is not an error of ours.
process.stdout.on('error', (err) => {
  if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw err;
});
const { main } = await import('../dist/cli/main.js');
process.exitCode = await main(process.argv.slice(2));
