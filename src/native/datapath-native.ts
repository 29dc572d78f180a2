// The datapath packet engine's part of the native boundary (native/dp.c).
export interface DatapathAddon {}
