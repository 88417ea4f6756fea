import type { MigrationRegistry } from "../migrate.ts";
import { migration0001Platform } from "./0001_platform.ts";

/** The platform's migrations. Capabilities export theirs beside it; combineMigrations joins them. */
export const platformMigrations: MigrationRegistry = Object.freeze({
  "0001_platform": migration0001Platform,
});
