import { Migration } from '@mikro-orm/migrations';

export class Migration20261124014500_service_autoscaling extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table \`runs\` add column \`desired_replica_count\` integer null;`);
    this.addSql(`alter table \`runs\` add column \`last_scaled_at\` datetime null;`);
  }

}
