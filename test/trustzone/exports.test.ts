/**
 * The module paths other code imports from (the CLI, the demo, the bench) keep every name they
 * exported before protocol.ts, server.ts and secure-zone.ts were split: this file fails to compile
 * (npm run typecheck) or to run when one goes missing.
 */
import { describe, expect, it } from "vitest";
import type {
  ContainerHandle,
  ContainerState,
  ContainerView,
  RelayResult,
  SubKeyResult,
  ZoneBundle,
  ZoneEvent,
  ZoneEventType,
} from "../../src/handset/secure-zone.ts";
import * as secureZone from "../../src/handset/secure-zone.ts";
import type {
  ContainerKeyCheck,
  RelayCommand,
  RelayOp,
  SignalExpectation,
  SignalInput,
  SubKeyMaterial,
  TokenClaims,
  TokenContext,
  TokenLimits,
  ZoneSignal,
  ZoneSignalType,
} from "../../src/trustzone/protocol.ts";
import * as protocol from "../../src/trustzone/protocol.ts";
import type { TrustzoneRoutes } from "../../src/trustzone/routes.ts";
import * as routes from "../../src/trustzone/routes.ts";
import type { ProvisioningBundle, RelayView, ZoneReport } from "../../src/trustzone/server.ts";
import * as server from "../../src/trustzone/server.ts";

type Kept = [
  ContainerHandle,
  ContainerState,
  ContainerView,
  RelayResult,
  SubKeyResult,
  ZoneBundle,
  ZoneEvent,
  ZoneEventType,
  ContainerKeyCheck,
  RelayCommand,
  RelayOp,
  SignalExpectation,
  SignalInput,
  SubKeyMaterial,
  TokenClaims,
  TokenContext,
  TokenLimits,
  ZoneSignal,
  ZoneSignalType,
  TrustzoneRoutes,
  ProvisioningBundle,
  RelayView,
  ZoneReport,
];

const has = (m: Record<string, unknown>, names: string[]) =>
  expect(names.filter((n) => m[n] === undefined)).toEqual([]);

describe("names exported before the split", () => {
  it("protocol.ts", () =>
    has(protocol, [
      "LABELS",
      "KEY_LENGTH",
      "TOKEN_ISSUER",
      "TOKEN_CLOCK_SKEW_SECONDS",
      "RELAY_MAX_AGE_MS",
      "MAX_PACKAGE_NAME_BYTES",
      "MAX_ZONE_ID_BYTES",
      "MAX_CONTAINER_INDEX",
      "u32be",
      "checkPackageName",
      "checkZoneId",
      "deriveStorageKey",
      "userKeySalt",
      "deriveUserKey",
      "deriveZoneAdminKey",
      "deriveZoneRequestKey",
      "deriveFreeContainerKey",
      "deriveSubKey",
      "deriveContainerKey",
      "keyCheck",
      "keyMatchesCheck",
      "newTokenId",
      "parseTokenClaims",
      "checkTokenClaims",
      "issueToken",
      "verifyToken",
      "generateSubKeyMaterial",
      "sealSubKeyForManager",
      "openSubKey",
      "ZONE_SIGNAL_TYPES",
      "parseSignal",
      "macSignal",
      "verifySignal",
      "wrapSignalKey",
      "unwrapSignalKey",
      "buildKeyedSignal",
      "buildFreeingSignal",
      "packageAad",
      "sealPackage",
      "openPackage",
      "parseRelayCommand",
      "relayProof",
      "verifyRelayProof",
      // moved here from server.ts
      "ZONE_REQUEST_SIGNATURE",
    ]));

  it("server.ts", () =>
    has(server, [
      "ZONE_REQUEST_SIGNATURE",
      "WEBHOOK_TAG",
      "MANAGER_API_KEY",
      "DEFAULT_CONTAINERS",
      "MAX_CONTAINERS",
      "AT_REST",
      "notFound",
      "TrustzoneService",
      "tokenStatusOf",
      "relayViewOf",
    ]));

  it("routes.ts", () => has(routes, ["MAX_RELAY_WAIT_SECONDS", "registerTrustzoneRoutes"]));

  it("secure-zone.ts", () =>
    has(secureZone, [
      "DEFAULT_CONTAINERS",
      "FREE_CONTAINER_ATTEMPTS",
      "MAX_PACKAGE_BYTES",
      "MAX_PACKAGES_PER_CONTAINER",
      "MAX_CONTAINER_BYTES",
      "SecureZone",
    ]));

  it("every type still resolves (checked by tsc)", () => expect(([] as Kept[]).length).toBe(0));

  it("server.ts re-exports the protocol's zone request profile, not a copy", () =>
    expect(server.ZONE_REQUEST_SIGNATURE).toBe(protocol.ZONE_REQUEST_SIGNATURE));
});
