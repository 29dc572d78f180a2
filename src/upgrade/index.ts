/**
 * The orchestrator as the rest of ziu uses it (cli, bench, demo, workspace):
 * run an upgrade, recover an interrupted one, describe a datapath. The
 * phases, the journal, the peer and the verify steps stay inside this room
 * (docs/architecture.md).
 */
export { DEFAULTS, upgrade, type UpgradeOptions } from './upgrade.js';
export { EXIT_FOR, PHASES, type Phase, type PortReport, type UpgradeReport, type UpgradeResult } from './report.js';
export { overview, recover, RECOVER_EXIT, type DatapathOverview, type RecoverReport } from './recover.js';
export { upgradePaths } from './journal.js';
export { DEAD_MAN_MS } from '../handover/messages/index.js';
