import { pageSizeInfo } from '../hugepages/index.js';
import type { MemFile } from './store.js';

/**
 * The kernel-mode vRouter agent reads its flow and bridge table files from
 * contrail-vrouter-agent.conf, [RESTART] section:
 *   huge_page_2M=<flow file> <bridge file>   (or huge_page_1G=...)
 * Given an instance's mem files, the lines to put there, flow first.
 */
export function vrouterAgentLines(files: MemFile[]): string[] {
  const lines: string[] = [];
  for (const size of ['2M', '1G'] as const) {
    const ofSize = files.filter((f) => f.backing === 'hugetlbfs' && f.path !== null && pageSizeInfo(f.pageSize).name === size);
    const flow = ofSize.find((f) => f.role === 'flow');
    const bridge = ofSize.find((f) => f.role === 'bridge');
    const paths = [flow, bridge].filter((f): f is MemFile => f !== undefined).map((f) => f.path);
    if (paths.length > 0) lines.push(`huge_page_${size}=${paths.join(' ')}`);
  }
  return lines;
}
