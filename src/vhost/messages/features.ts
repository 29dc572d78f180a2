/** Feature negotiation and capacity queries: no payload, or one u64. */
import { u64Payload } from '../wire.js';
import { checkFds, checkSize, emptyCodec, type Codec } from './raw.js';

export interface GetFeaturesRequest {
  type: 'GET_FEATURES';
  needReply: boolean;
}

export interface SetFeaturesRequest {
  type: 'SET_FEATURES';
  needReply: boolean;
  /** virtio feature bits the front-end acks (VirtioFeature masks) */
  features: bigint;
}

export interface GetProtocolFeaturesRequest {
  type: 'GET_PROTOCOL_FEATURES';
  needReply: boolean;
}

export interface SetProtocolFeaturesRequest {
  type: 'SET_PROTOCOL_FEATURES';
  needReply: boolean;
  /** ProtocolFeature masks */
  features: bigint;
}

export interface GetQueueNumRequest {
  type: 'GET_QUEUE_NUM';
  needReply: boolean;
}

export interface GetMaxMemSlotsRequest {
  type: 'GET_MAX_MEM_SLOTS';
  needReply: boolean;
}

export type FeatureRequest =
  | GetFeaturesRequest
  | SetFeaturesRequest
  | GetProtocolFeaturesRequest
  | SetProtocolFeaturesRequest
  | GetQueueNumRequest
  | GetMaxMemSlotsRequest;

// Whether the bits are acceptable depends on what was offered: the state machine's call.
function featuresCodec<T extends 'SET_FEATURES' | 'SET_PROTOCOL_FEATURES'>(
  type: T,
): Codec<{ type: T; needReply: boolean; features: bigint }> {
  return {
    decode: (raw) =>
      checkSize(raw, 8) ?? checkFds(raw, 0) ?? { type, needReply: raw.needReply, features: raw.body.readBigUInt64LE(0) },
    encode: (req) => ({ payload: u64Payload(req.features, 'features'), fds: [] }),
  };
}

export const featureCodecs = {
  GET_FEATURES: emptyCodec('GET_FEATURES'),
  SET_FEATURES: featuresCodec('SET_FEATURES'),
  GET_PROTOCOL_FEATURES: emptyCodec('GET_PROTOCOL_FEATURES'),
  SET_PROTOCOL_FEATURES: featuresCodec('SET_PROTOCOL_FEATURES'),
  GET_QUEUE_NUM: emptyCodec('GET_QUEUE_NUM'),
  GET_MAX_MEM_SLOTS: emptyCodec('GET_MAX_MEM_SLOTS'),
} satisfies { [K in FeatureRequest['type']]: Codec<Extract<FeatureRequest, { type: K }>> };
