/**
 * The front-end's message sequence, as DPDK's virtio-user sends it at probe
 * (drivers/net/virtio/virtio_user/virtio_user_dev.c), for one virtio-net
 * device with one or more queue pairs: ring 2k RX of pair k, 2k+1 TX.
 */
import { ZiuError } from '../errors.js';
import { ProtocolFeature, VirtioFeature, type Reply, type Request, type RequestName } from '../vhost/index.js';
import type { ProbePortLayout } from '../native/probe-native.js';
import type { FrontendConnection } from './connection.js';

/** Protocol features the probe takes when offered (virtio-user masks to MQ | REPLY_ACK | STATUS; it uses none but REPLY_ACK). */
export const WANTED_PROTOCOL_FEATURES = ProtocolFeature.REPLY_ACK;

/** What the device is, for the back-end: memory, rings, eventfds, and where each ring resumes. */
export interface DeviceSetup {
  layout: ProbePortLayout;
  memFd: number;
  /** one per ring: [rx0, tx0, rx1, tx1, ...] */
  kickFds: readonly number[];
  callFds: readonly number[];
  /** SET_VRING_BASE per ring: 0 on the first connection, used->idx on a reconnect */
  bases: readonly number[];
}

export interface Negotiated {
  offeredFeatures: bigint;
  features: bigint;
  /** null when the back-end does not speak protocol features (bit 30) */
  offeredProtocolFeatures: bigint | null;
  protocolFeatures: bigint | null;
  replyAck: boolean;
  /** the requests sent, in order */
  sequence: RequestName[];
}

export async function negotiate(conn: FrontendConnection, dev: DeviceSetup): Promise<Negotiated> {
  const sequence: RequestName[] = [];
  const send = async (req: Request): Promise<Reply | undefined> => {
    sequence.push(req.type);
    return conn.request(req);
  };
  const fail = (message: string): ZiuError => new ZiuError('ERR_ZIU_VHOST_NEGOTIATION', `vhost-user '${conn.path}': ${message}`);
  const rings = dev.layout.rings.map((_, i) => i);
  const pairs = rings.length / 2;

  await send({ type: 'SET_OWNER', needReply: false });
  const gf = await send({ type: 'GET_FEATURES', needReply: false });
  if (gf?.type !== 'GET_FEATURES') throw fail('no features in the reply to GET_FEATURES');
  const offered = gf.features;
  if ((offered & VirtioFeature.VERSION_1) === 0n) {
    throw fail(`the back-end does not offer VIRTIO_F_VERSION_1 (features 0x${offered.toString(16)}); the probe speaks virtio 1.0 only`);
  }

  let offeredProtocol: bigint | null = null;
  let protocol: bigint | null = null;
  if ((offered & VirtioFeature.F_PROTOCOL_FEATURES) !== 0n) {
    const gp = await send({ type: 'GET_PROTOCOL_FEATURES', needReply: false });
    if (gp?.type !== 'GET_PROTOCOL_FEATURES') throw fail('no features in the reply to GET_PROTOCOL_FEATURES');
    offeredProtocol = gp.features;
    protocol = offeredProtocol & (WANTED_PROTOCOL_FEATURES | (pairs > 1 ? ProtocolFeature.MQ : 0n));
    await send({ type: 'SET_PROTOCOL_FEATURES', needReply: false, features: protocol });
  }
  if (pairs > 1) {
    // As QEMU's queues=N: the back-end must say MQ and serve at least N pairs.
    if (protocol === null || (protocol & ProtocolFeature.MQ) === 0n) throw fail(`${pairs} queue pairs need VHOST_USER_PROTOCOL_F_MQ, which the back-end does not offer`);
    const gq = await send({ type: 'GET_QUEUE_NUM', needReply: false });
    if (gq?.type !== 'GET_QUEUE_NUM') throw fail('no count in the reply to GET_QUEUE_NUM');
    if (gq.queues < pairs) throw fail(`the back-end serves ${gq.queues} queue pairs, ${pairs} asked`);
  }
  const replyAck = protocol !== null && (protocol & ProtocolFeature.REPLY_ACK) !== 0n;

  for (const index of rings) await send({ type: 'SET_VRING_CALL', needReply: false, index, fd: dev.callFds[index]! });

  const features = VirtioFeature.VERSION_1 | (offered & VirtioFeature.F_PROTOCOL_FEATURES);
  await send({ type: 'SET_FEATURES', needReply: false, features });

  // One region, gpa = userspace_addr = our mapping's address (as virtio-user): descriptor
  // and ring addresses are then both plain pointers into our mapping.
  const { base, size } = dev.layout;
  const ack = await send({
    type: 'SET_MEM_TABLE',
    needReply: replyAck,
    regions: [{ guestPhysAddr: base, memorySize: BigInt(size), userspaceAddr: base, mmapOffset: 0n, fd: dev.memFd }],
  });
  if (replyAck && !(ack?.type === 'ACK' && ack.ok)) throw fail('the back-end refused SET_MEM_TABLE (REPLY_ACK failure)');

  for (const index of rings) {
    const ring = dev.layout.rings[index]!;
    await send({ type: 'SET_VRING_NUM', needReply: false, index, num: ring.num });
    await send({ type: 'SET_VRING_BASE', needReply: false, index, num: dev.bases[index]! });
    await send({ type: 'SET_VRING_ADDR', needReply: false, index, flags: 0, desc: ring.desc, used: ring.used, avail: ring.avail, log: 0n });
    await send({ type: 'SET_VRING_KICK', needReply: false, index, fd: dev.kickFds[index]! });
  }
  // Without protocol features every ring is enabled at SET_FEATURES and ENABLE does not exist.
  // With REPLY_ACK, the acks say the backend has enabled the rings: frames sent
  // before that could find the receive ring disabled and be dropped.
  if (protocol !== null) for (const index of rings) await send({ type: 'SET_VRING_ENABLE', needReply: replyAck, index, enable: true });

  return { offeredFeatures: offered, features, offeredProtocolFeatures: offeredProtocol, protocolFeatures: protocol, replyAck, sequence };
}
