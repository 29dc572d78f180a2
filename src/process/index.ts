/**
 * Process lifecycle, for any command: start one detached and wait for its
 * READY=1 (sd_notify) within a deadline; whether a pid is alive; stop it
 * (SIGTERM, then SIGKILL) and wait until it is gone; which processes still
 * map or hold a file. It knows nothing of upgrades, datapaths or the CLI:
 * those rooms build on this one.
 */
export { launchDetached, type Exit, type Launched, type LaunchOptions } from './launch.js';
export { removeStaleSocket } from './notify.js';
export { processAlive, processState, stopProcess, waitGone, type Stopped } from './stop.js';
export { isSameProcess, processRef, toProcessRef, type ProcessRef } from './identity.js';
export { fileId, processesHolding, type FileId } from './holders.js';
