#!/usr/bin/env node
const { main } = await import('../dist/datapath/fakenic/main.js');
const code = await main(process.argv.slice(2));
if (code !== null) process.exit(code);
