import { Migration } from '@mikro-orm/migrations';

export class Migration20261124014500_service_autoscaling extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "runs" add column "desired_replica_count" int null, add column "last_scaled_at" timestamptz null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "runs" drop column "desired_replica_count", drop column "last_scaled_at";`);
  }

}
