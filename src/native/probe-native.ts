// The probe's part of the native boundary (native/probe.c).
export interface ProbeAddon {}
